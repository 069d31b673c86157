/* Lets libFuzzer find atheris's custom mutator and crossover when libFuzzer is preloaded.

   atheris defines LLVMFuzzerCustomMutator/LLVMFuzzerCustomCrossOver in modules it loads during Setup()
   (atheris/custom_mutator*.so, custom_crossover*.so). libFuzzer looks these up through weak references that
   the dynamic linker resolves when the preloaded asan_with_fuzzer.so is relocated, long before: so with a
   preloaded libFuzzer (needed for sanitized native extensions) a custom mutator is silently never called.
   Preloaded after asan_with_fuzzer.so (fuzz/env.sh), this library defines both functions; each forwards to
   atheris's, found among the loaded objects at the first call, or falls back to libFuzzer's own mutation. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

typedef size_t (*mutator)(uint8_t *, size_t, size_t, unsigned int);
typedef size_t (*crossover)(const uint8_t *, size_t, const uint8_t *, size_t, uint8_t *, size_t, unsigned int);

struct wanted {
    const char *path_part;
    const char *symbol;
    void *found;
};

static int look(struct dl_phdr_info *info, size_t size, void *data) {
    struct wanted *wanted = data;
    void *handle;
    (void)size;
    if (info->dlpi_name == NULL || strstr(info->dlpi_name, wanted->path_part) == NULL)
        return 0;
    handle = dlopen(info->dlpi_name, RTLD_NOW | RTLD_NOLOAD);
    if (handle == NULL)
        return 0;
    wanted->found = dlsym(handle, wanted->symbol);
    return wanted->found != NULL;
}

static void *find(const char *path_part, const char *symbol) {
    struct wanted wanted = {path_part, symbol, NULL};
    dl_iterate_phdr(look, &wanted);
    return wanted.found;
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed) {
    static mutator real;
    static int looked;
    if (!looked) {
        real = (mutator)find("/atheris/custom_mutator", "LLVMFuzzerCustomMutator");
        looked = 1;
    }
    return real ? real(data, size, max_size, seed) : LLVMFuzzerMutate(data, size, max_size);
}

size_t LLVMFuzzerCustomCrossOver(const uint8_t *data1, size_t size1, const uint8_t *data2, size_t size2,
                                 uint8_t *out, size_t max_out_size, unsigned int seed) {
    static crossover real;
    static int looked;
    if (!looked) {
        real = (crossover)find("/atheris/custom_crossover", "LLVMFuzzerCustomCrossOver");
        looked = 1;
    }
    return real ? real(data1, size1, data2, size2, out, max_out_size, seed) : 0;
}
