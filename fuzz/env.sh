# Sourced, not run: `. fuzz/env.sh [sanitized|coverage]` makes python import ddc over the extensions that
# fuzz/build.sh built into build/VARIANT (see docs/fuzzing.md).
#   sanitized: the ASan runtime with libFuzzer that atheris ships (asan_with_fuzzer.so, it carries the UBSan
#              handlers too) is preloaded, as atheris documents for native extensions; leak checking is off
#              because CPython keeps its memory until exit by design.
#   coverage:  every instrumented extension writes build/coverage/profiles/MODULE-PID.profraw at exit.
_ddc_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_ddc_variant=${1:-sanitized}
_ddc_python=${PYTHON:-$_ddc_root/.venv/bin/python}
if [ ! -d "$_ddc_root/build/$_ddc_variant/ddc/_core" ]; then
    echo "no $_ddc_variant build: run fuzz/build.sh $_ddc_variant first" >&2
    return 1 2>/dev/null || exit 1
fi
export PYTHONPATH="$_ddc_root/build/$_ddc_variant${PYTHONPATH:+:$PYTHONPATH}"
# `python -m pytest` and `python -c` would otherwise put the current directory, the checkout with its in-place
# extensions, before PYTHONPATH (Python 3.11's -P).
export PYTHONSAFEPATH=1
case "$_ddc_variant" in
    sanitized)
        # libFuzzer must come first; the hooks after it make atheris's custom mutator reachable
        # (fuzz/libfuzzer_hooks.c)
        export LD_PRELOAD="$("$_ddc_python" -c 'import atheris; print(atheris.path())')/asan_with_fuzzer.so"
        if [ -f "$_ddc_root/build/sanitized/libddc_libfuzzer_hooks.so" ]; then
            LD_PRELOAD="$LD_PRELOAD:$_ddc_root/build/sanitized/libddc_libfuzzer_hooks.so"
        fi
        export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:abort_on_error=0:symbolize=1:${ASAN_OPTIONS:-}"
        export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
        ;;
    coverage)
        export LLVM_PROFILE_FILE="$_ddc_root/build/coverage/profiles/%m-%p.profraw"
        ;;
esac
unset _ddc_root _ddc_variant _ddc_python
