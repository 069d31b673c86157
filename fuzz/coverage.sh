#!/usr/bin/env bash
# Line coverage of the receiver's FEC path from the fuzz corpus: builds the core with clang source-based
# coverage (build/coverage), replays every target's seeds, crashers and grown corpus (build/fuzz/corpus) through
# fuzz/replay.py, and reports try_recover (receiver.pyx), keep_symbol (fec_blocks.pyx) and recover (fec.pyx)
# line by line.
#     fuzz/coverage.sh            -> build/coverage/report.txt (and llvm-cov's full views beside it)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
fuzz/build.sh coverage
OUT=build/coverage
rm -rf "$OUT/profiles"
(. fuzz/env.sh coverage && nice -n "${NICE:-10}" "$PYTHON" fuzz/replay.py --all) | tee "$OUT/replay.txt"
llvm-profdata merge -sparse "$OUT"/profiles/*.profraw -o "$OUT/merged.profdata"
SUFFIX=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
OBJECTS=()
for module in receiver fec_blocks fec; do
    OBJECTS+=(-object "$OUT/ddc/_core/$module$SUFFIX")
done
for module in receiver fec_blocks fec; do
    llvm-cov show "${OBJECTS[@]:1}" -instr-profile="$OUT/merged.profdata" "$OUT/c/ddc/_core/$module.c" \
        > "$OUT/$module.c.show.txt"
done
{
    echo "Line coverage of the coverage build (fuzz/coverage.sh) after replaying:"
    cat "$OUT/replay.txt"
    echo
    "$PYTHON" fuzz/pyx_coverage.py "$OUT/receiver.c.show.txt" ddc/_core/receiver.pyx try_recover take_data \
        take_parity accept_rebuilt
    "$PYTHON" fuzz/pyx_coverage.py "$OUT/fec_blocks.c.show.txt" ddc/_core/fec_blocks.pyx keep_symbol open_block \
        close_block
    "$PYTHON" fuzz/pyx_coverage.py "$OUT/fec.c.show.txt" ddc/_core/fec.pyx recover invert
    llvm-cov report "${OBJECTS[@]:1}" -instr-profile="$OUT/merged.profdata" "$OUT/c/ddc/_core/receiver.c" \
        "$OUT/c/ddc/_core/fec_blocks.c" "$OUT/c/ddc/_core/fec.c"
} > "$OUT/report.txt"
echo "coverage report: $OUT/report.txt"
