// nucseg view: OpenSeadragon for the slide, a canvas for the nuclei outlines, OpenSeadragon
// overlays for the flagged chunks. window.nucseg exposes what was drawn (for the browser tests).
"use strict";

const TYPE_COLOURS = {
  epithelial: "#e6194b", inflammatory: "#3cb44b", spindle: "#4363d8", other: "#f58231",
};
const NO_TYPE = "#ffe119";
const MAX_UM_PER_SCREEN_PIXEL = 1.5; // zoomed out further: the density map, not outlines
const state = { item: null, viewer: null, data: null, heat: null, flags: [], fetchId: 0, timer: null };
// firstTileMs: milliseconds from the page's navigation to its first tile (the benchmark's figure)
window.nucseg = { ready: false, tilesLoaded: 0, drawn: 0, count: 0, complete: false, box: null,
                  selected: null, density: false, firstTileMs: null };

const $ = (id) => document.getElementById(id);
window.nucseg_viewer = () => state.viewer; // the OpenSeadragon viewer, for the tests

async function main() {
  const response = await fetch("api/items");
  const listing = await response.json();
  const items = listing.items;
  state.first = listing.first;
  const select = $("item");
  for (const item of items) select.add(new Option(item.title, item.name));
  select.addEventListener("change", () => open(select.value));
  for (const id of ["show-outlines", "opacity-outlines", "show-density", "opacity-density"]) {
    $(id).addEventListener("input", draw);
  }
  $("show-flags").addEventListener("input", styleFlags);
  $("opacity-flags").addEventListener("input", styleFlags);
  const wanted = new URLSearchParams(location.hash.slice(1)).get("item");
  const first = items.find((i) => i.name === wanted) || items[0];
  select.value = first.name;
  open(first.name);
}

async function open(name) {
  const item = state.first && state.first.name === name
    ? state.first : await (await fetch("api/" + encodeURIComponent(name) + "/info")).json();
  if (state.viewer) state.viewer.destroy();
  Object.assign(state, { item, data: null, heat: null, flags: [] });
  Object.assign(window.nucseg, { ready: false, tilesLoaded: 0, drawn: 0, count: 0, selected: null });
  location.hash = "item=" + encodeURIComponent(item.name);
  const viewer = OpenSeadragon({
    element: $("osd"), prefixUrl: "osd/images/", showNavigator: true, navigatorPosition: "TOP_RIGHT",
    tileSources: { Image: {  // the Deep Zoom descriptor of /dzi/NAME.dzi, inline
      xmlns: "http://schemas.microsoft.com/deepzoom/2008", Url: "dzi/" + encodeURIComponent(item.name) + "_files/",
      Format: item.tiles.format, Overlap: String(item.tiles.overlap), TileSize: String(item.tiles.size),
      Size: { Width: String(item.width), Height: String(item.height) } } },
    maxZoomPixelRatio: 4, drawer: "canvas",  // no WebGL context to set up (slow without a GPU)
    gestureSettingsMouse: { clickToZoom: false }, animationTime: 0.4,
  });
  state.viewer = viewer;
  viewer.addHandler("open", () => {
    const d = item.density;
    viewer.addSimpleImage({
      url: "api/" + encodeURIComponent(item.name) + "/density.png", x: 0, y: 0,
      width: (d.cols * d.cell) / item.width, opacity: 0,
      success: (event) => { state.heat = event.item; draw(); },
    });
    addFlags();
    window.nucseg.ready = true;
    refresh();
  });
  viewer.addHandler("tile-loaded", () => {
    window.nucseg.tilesLoaded += 1;
    if (window.nucseg.firstTileMs === null) window.nucseg.firstTileMs = performance.now();
  });
  viewer.addHandler("animation", draw);
  viewer.addHandler("resize", () => { draw(); refresh(); });
  viewer.addHandler("animation-finish", refresh);
  viewer.addHandler("canvas-click", (event) => {
    if (!event.quick) return;
    const point = slideImage().viewerElementToImageCoordinates(event.position);
    pick(point.x, point.y);
  });
  viewer.addHandler("canvas-double-click", (event) => { event.preventDefaultAction = false; });
  summary(item);
  legend(item);
}

function slideImage() {
  return state.viewer.world.getItemAt(0);
}

function summary(item) {
  const mpp = item.mpp ? item.mpp.toPrecision(3) + " µm/px" : "mpp unknown";
  $("summary").textContent = `${item.width} × ${item.height} px, ${mpp}, ${item.nuclei} nuclei` +
    (item.flags.length ? `, ${item.flags.length} flagged chunks` : "");
  $("report").innerHTML = item.report ? `<a href="${item.report}" target="_blank">Report of this slide</a>` : "";
  $("info").textContent = "Click a nucleus for its measurements.";
}

function legend(item) {
  const parts = [];
  if (item.types) {
    for (const name of item.types) {
      parts.push(`<div><span class="swatch" style="background:${TYPE_COLOURS[name]}"></span>${name}</div>`);
    }
  } else {
    parts.push(`<div><span class="swatch" style="background:${NO_TYPE}"></span>nucleus (no types in this run)</div>`);
  }
  const d = item.density;
  parts.push(`<div style="margin-top:6px">Density, ${d.unit}</div><div class="gradient"></div>` +
    `<div style="display:flex;justify-content:space-between"><span>0</span><span>${Math.round(d.scale_max)}</span></div>`);
  $("legend").innerHTML = parts.join("");
}

function refresh() {
  clearTimeout(state.timer);
  state.timer = setTimeout(fetchOutlines, 60);
}

async function fetchOutlines() {
  const viewer = state.viewer;
  const image = viewer && slideImage();
  if (!image) return;
  const item = state.item;
  const bounds = image.viewportToImageRectangle(viewer.viewport.getBounds(true));
  const x0 = Math.max(0, bounds.x), y0 = Math.max(0, bounds.y);
  const x1 = Math.min(item.width, bounds.x + bounds.width), y1 = Math.min(item.height, bounds.y + bounds.height);
  const perScreenPixel = bounds.width / viewer.container.clientWidth;
  const tol = (perScreenPixel * 0.5).toFixed(3);
  // outlines once a nucleus (about 30 level-0 pixels at 40x) is several screen pixels wide
  const limit = perScreenPixel * (item.mpp || 0.25) > MAX_UM_PER_SCREEN_PIXEL ? 0 : item.max_outlines;
  const id = ++state.fetchId;
  const url = `api/${encodeURIComponent(item.name)}/nuclei?x0=${x0}&y0=${y0}&x1=${x1}&y1=${y1}&tol=${tol}&limit=${limit}`;
  const buffer = await (await fetch(url)).arrayBuffer();
  if (id !== state.fetchId || item !== state.item) return;
  state.data = parse(buffer);
  Object.assign(window.nucseg, { count: state.data.n, complete: state.data.complete, box: [x0, y0, x1, y1] });
  $("status").textContent = state.data.complete
    ? `${state.data.n} nuclei in view`
    : `${state.data.n} nuclei in view: zoom in for outlines`;
  draw();
}

function parse(buffer) {
  const head = new Uint32Array(buffer, 0, 3);
  const n = head[0], points = head[1], complete = head[2] === 1;
  if (!complete) return { n, complete };
  let offset = 12;
  const ids = new Int32Array(buffer, offset, n); offset += 4 * n;
  const types = new Uint8Array(buffer, offset, n); offset += n + ((4 - (n % 4)) % 4);
  const starts = new Uint32Array(buffer, offset, n + 1); offset += 4 * (n + 1);
  const xy = new Float32Array(buffer, offset, 2 * points);
  return { n, complete, ids, types, starts, xy };
}

function draw() {
  const viewer = state.viewer;
  const canvas = $("outlines");
  const ratio = window.devicePixelRatio || 1;
  canvas.width = canvas.clientWidth * ratio;
  canvas.height = canvas.clientHeight * ratio;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const image = viewer && slideImage();
  if (!image) return;
  scalebar(image);
  const data = state.data;
  const showOutlines = $("show-outlines").checked && data && data.complete;
  if (state.heat) {
    const heat = $("show-density").checked && !(data && data.complete) && data !== null;
    state.heat.setOpacity(heat ? Number($("opacity-density").value) : 0);
    window.nucseg.density = heat;
  }
  window.nucseg.drawn = 0;
  if (!showOutlines) return;
  const p0 = image.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
  const p1 = image.imageToViewerElementCoordinates(new OpenSeadragon.Point(1000, 0));
  const s = (p1.x - p0.x) / 1000;
  ctx.setTransform(s * ratio, 0, 0, s * ratio, p0.x * ratio, p0.y * ratio);
  ctx.globalAlpha = Number($("opacity-outlines").value);
  ctx.lineWidth = 1.5 / s;
  const names = state.item.types || [];
  const byColour = new Map();
  for (let i = 0; i < data.n; i++) {
    const colour = data.types[i] < names.length ? TYPE_COLOURS[names[data.types[i]]] : NO_TYPE;
    if (!byColour.has(colour)) byColour.set(colour, []);
    byColour.get(colour).push(i);
  }
  for (const [colour, members] of byColour) {
    ctx.strokeStyle = colour;
    ctx.beginPath();
    for (const i of members) ring(ctx, data, i);
    ctx.stroke();
  }
  const selected = window.nucseg.selected;
  if (selected) {
    const i = data.ids.indexOf(selected.id);
    if (i >= 0) {
      ctx.strokeStyle = "#00e5ff"; ctx.lineWidth = 3 / s; ctx.beginPath(); ring(ctx, data, i); ctx.stroke();
    }
  }
  window.nucseg.drawn = data.n;
}

function ring(ctx, data, i) {
  const a = data.starts[i], b = data.starts[i + 1];
  if (b <= a) return;
  ctx.moveTo(data.xy[2 * a], data.xy[2 * a + 1]);
  for (let k = a + 1; k < b; k++) ctx.lineTo(data.xy[2 * k], data.xy[2 * k + 1]);
  ctx.closePath();
}

function scalebar(image) {
  const mpp = state.item.mpp;
  if (!mpp) { $("scalebar").hidden = true; return; }
  $("scalebar").hidden = false;
  const p0 = image.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
  const p1 = image.imageToViewerElementCoordinates(new OpenSeadragon.Point(1000, 0));
  const umPerScreenPixel = mpp / ((p1.x - p0.x) / 1000);
  const target = umPerScreenPixel * 120;
  const power = Math.pow(10, Math.floor(Math.log10(target)));
  const nice = [5, 2, 1].map((m) => m * power).find((v) => v <= target);
  $("scalebar-bar").style.width = `${nice / umPerScreenPixel}px`;
  $("scalebar-label").textContent = nice >= 1000 ? `${nice / 1000} mm` : `${+nice.toPrecision(3)} µm`;
}

function addFlags() {
  const image = slideImage();
  for (const flag of state.item.flags) {
    const element = document.createElement("div");
    element.className = "flag";
    element.dataset.chunk = flag.chunk;
    element.addEventListener("mouseenter", (event) => showTip(event, flag));
    element.addEventListener("mousemove", (event) => showTip(event, flag));
    element.addEventListener("mouseleave", () => { $("tip").hidden = true; });
    state.viewer.addOverlay({ element, location: image.imageToViewportRectangle(flag.x, flag.y, flag.w, flag.h) });
    state.flags.push(element);
  }
  styleFlags();
}

function showTip(event, flag) {
  const tip = $("tip");
  const box = $("osd").getBoundingClientRect();
  tip.innerHTML = `<b>chunk ${flag.chunk}</b><br>` + flag.warnings.map(escapeHtml).join("<br>");
  tip.style.left = `${event.clientX - box.left + 12}px`;
  tip.style.top = `${event.clientY - box.top + 12}px`;
  tip.hidden = false;
}

function styleFlags() {
  // OpenSeadragon sets each overlay's inline display to "block" on every redraw, so the
  // checkbox hides the flags through a class on the viewer (an !important rule), not inline.
  $("osd").classList.toggle("hide-flags", !$("show-flags").checked);
  for (const element of state.flags) element.style.opacity = $("opacity-flags").value;
}

async function pick(x, y) {
  const item = state.item;
  const response = await fetch(`api/${encodeURIComponent(item.name)}/at?x=${x}&y=${y}`);
  const nucleus = (await response.json()).nucleus;
  window.nucseg.selected = nucleus;
  if (!nucleus) { $("info").textContent = "No nucleus here."; draw(); return; }
  const rows = Object.entries(nucleus).map(([key, value]) =>
    `<tr><td>${escapeHtml(key)}</td><td>${escapeHtml(format(value))}</td></tr>`);
  $("info").innerHTML = `<table id="nucleus">${rows.join("")}</table>`;
  draw();
}

function format(value) {
  if (typeof value === "number" && !Number.isInteger(value)) return value.toPrecision(4);
  return String(value);
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

main();
