#!/usr/bin/env bash
# CI: the tests that once depended on the machine's speed, run while busy loops occupy every core
# (one per core, as a loaded 2-core machine or a shared runner): they must pass all the same. The
# worker-kill test runs three times in a row. The busy loops are killed on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
cores="${NUCSEG_LOAD_CORES:-$(nproc)}"
busy=()
trap 'kill "${busy[@]}" 2>/dev/null || true' EXIT
for _ in $(seq "$cores"); do
    "$python" -c "while True: pass" &
    busy+=("$!")
done
echo "under_load: ${#busy[@]} busy loops on $(nproc) cores"
"$python" -m pytest -q \
    tests/test_cohort.py \
    "tests/test_train.py::test_budgeted_steps_stop_at_the_step_count_or_the_time_budget" \
    "tests/test_slide.py::test_resume_after_kill_gives_the_same_outputs" \
    "tests/test_failures.py::test_a_signal_leaves_complete_images_only"
for run in 2 3; do
    echo "under_load: the worker-kill test, run $run of 3"
    "$python" -m pytest -q "tests/test_cohort.py::test_a_worker_killed_mid_run_changes_nothing"
done
