/*
 * Style transfer through ditail's C API: a source model inverts a content image, a target
 * model samples from the inversion, the result is written as a PNG.
 *
 *   cc -O2 -I crates/ditail-capi/include examples/c/transfer.c -o transfer \
 *      -L target/release -lditail_capi
 *   LD_LIBRARY_PATH=target/release ./transfer tests/fixtures/models/tiny-a \
 *      tests/fixtures/models/tiny-b tests/fixtures/pipeline/content.png out.png \
 *      --size 64 --inv-steps 4 --steps 4 --backend cpu
 *
 * Arguments: SOURCE TARGET IMAGE OUTPUT [--prompt TEXT] [--size N] [--inv-steps N]
 * [--steps N] [--backend auto|cpu|wgpu|cuda] [--dtype auto|f32|f16]
 * [--save-inversion FILE] [--quiet]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ditail.h"

/* Prints a failed call's status and message, then leaves (the OS reclaims the rest). */
static void check(ditail_status status, const char *what) {
    if (status != DITAIL_STATUS_OK) {
        fprintf(stderr, "%s: %s: %s\n", what, ditail_status_string(status), ditail_last_error());
        exit(1);
    }
}

/* The progress callback: one line per step; returning false would cancel the run. */
static bool on_step(int phase, int step, int total, void *user_data) {
    const char *name = phase == DITAIL_PHASE_INVERSION ? "inversion"
                       : phase == DITAIL_PHASE_SAMPLING ? "sampling"
                                                        : "generation";
    if (!*(const int *)user_data) {
        fprintf(stderr, "%s %d/%d\n", name, step, total);
    }
    return true;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s SOURCE TARGET IMAGE OUTPUT [options]\n", argv[0]);
        return 2;
    }
    const char *prompt = "a photo of a cat", *save_inversion = NULL;
    unsigned size = 0, inv_steps = 50, steps = 50; /* size 0: the model family's own */
    int quiet = 0;
    ditail_context_settings cs = ditail_context_default_settings();
    for (int i = 5; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(opt, "--quiet")) { quiet = 1; continue; }
        if (!val) { fprintf(stderr, "%s needs a value\n", opt); return 2; }
        i++;
        if (!strcmp(opt, "--prompt")) prompt = val;
        else if (!strcmp(opt, "--size")) size = (unsigned)atoi(val);
        else if (!strcmp(opt, "--inv-steps")) inv_steps = (unsigned)atoi(val);
        else if (!strcmp(opt, "--steps")) steps = (unsigned)atoi(val);
        else if (!strcmp(opt, "--save-inversion")) save_inversion = val;
        else if (!strcmp(opt, "--backend"))
            cs.backend = !strcmp(val, "cpu") ? DITAIL_BACKEND_CPU
                         : !strcmp(val, "wgpu") ? DITAIL_BACKEND_WGPU
                         : !strcmp(val, "cuda") ? DITAIL_BACKEND_CUDA
                                                : DITAIL_BACKEND_AUTO;
        else if (!strcmp(opt, "--dtype"))
            cs.dtype = !strcmp(val, "f32") ? DITAIL_DTYPE_F32
                       : !strcmp(val, "f16") ? DITAIL_DTYPE_F16
                                             : DITAIL_DTYPE_AUTO;
        else { fprintf(stderr, "unknown option %s\n", opt); return 2; }
    }

    ditail_context *ctx = NULL;
    check(ditail_context_new(&cs, &ctx), "context");

    /* The source inverts, the target paints. */
    ditail_model *source = NULL, *target = NULL;
    ditail_model_spec spec = ditail_model_default_spec();
    spec.model = argv[1];
    check(ditail_model_load(ctx, &spec, &source), argv[1]);
    spec.model = argv[2];
    check(ditail_model_load(ctx, &spec, &target), argv[2]);

    ditail_inversion_settings is = ditail_inversion_default_settings();
    is.prompt = prompt;
    is.size = size;
    is.steps = inv_steps;
    ditail_inversion *inv = NULL;
    check(ditail_invert_file(source, argv[3], &is, on_step, &quiet, &inv), "inversion");
    if (save_inversion) {
        check(ditail_inversion_save(inv, save_inversion), save_inversion);
    }

    ditail_sampling_settings ss = ditail_sampling_default_settings();
    ss.prompt = prompt;
    ss.steps = steps;
    ditail_latents *latents = NULL;
    check(ditail_sample(target, inv, &ss, on_step, &quiet, &latents), "sampling");

    uint8_t *rgb = NULL;
    uint32_t width = 0, height = 0;
    check(ditail_decode(target, latents, &rgb, &width, &height), "decoding");
    check(ditail_write_png(argv[4], rgb, width, height), argv[4]);
    if (!quiet) {
        printf("wrote %s (%ux%u)\n", argv[4], width, height);
    }

    ditail_rgb_free(rgb);
    ditail_latents_free(latents);
    ditail_inversion_free(inv);
    ditail_model_free(target);
    ditail_model_free(source);
    ditail_context_free(ctx);
    return 0;
}
