#!/usr/bin/env bash
# Fuzzes one target on the sanitized build (fuzz/build.sh sanitized first): a receiver target, or the Kafka
# listener's request and record-batch parsers; or the directory sink (pure Python: on the checkout's build):
#     fuzz/run.sh plain|sealed|fec|listener|directory [libFuzzer options, e.g. -max_total_time=1200]
# The corpus grows in build/fuzz/corpus/TARGET (seeded from tests/fuzz_corpus/TARGET, which stays as it is);
# a crashing input is written to tests/fuzz_regressions/TARGET/ for the normal suite to replay.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${1:?usage: fuzz/run.sh plain|sealed|fec|listener|directory [libFuzzer options]}
shift
ENTRY=fuzz/receiver_fuzz.py
ARGUMENTS=("$TARGET")
if [ "$TARGET" = listener ]; then
    ENTRY=fuzz/listener_fuzz.py
    ARGUMENTS=()
fi
if [ "$TARGET" = directory ]; then
    ENTRY=fuzz/directory_fuzz.py
    ARGUMENTS=()
else
    . fuzz/env.sh sanitized
fi
# For -jobs/-workers: libFuzzer runs fuzz/receiver_fuzz.py itself, through its shebang.
export DDC_FUZZ_TARGET=$TARGET
PATH="$(cd "$(dirname "${PYTHON:-.venv/bin/python}")" && pwd):$PATH"
export PATH
mkdir -p "build/fuzz/corpus/$TARGET" "tests/fuzz_regressions/$TARGET"
exec nice -n "${NICE:-10}" "${PYTHON:-.venv/bin/python}" "$ENTRY" "${ARGUMENTS[@]}" \
    -max_len=131072 -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 -reload=0 \
    -artifact_prefix="tests/fuzz_regressions/$TARGET/" \
    "$@" "build/fuzz/corpus/$TARGET" "tests/fuzz_corpus/$TARGET"
