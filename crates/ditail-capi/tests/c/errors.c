/*
 * The C API's error paths, then one full transfer, meant to run under valgrind
 * (tests/c_api.rs): every failure must come back as a status and a message, never a crash,
 * and nothing may leak.
 *
 * Arguments: MODELS_DIR (holding tiny-a and tiny-b) CONTENT_PNG OUTPUT_DIR
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ditail.h"

/* The working size: small, so that the run under valgrind stays short. */
#define SIZE 32

static int failures = 0;

#define EXPECT(cond)                                                                    \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: expected %s (last error: %s)\n", __FILE__, __LINE__, \
                    #cond, ditail_last_error());                                        \
            failures++;                                                                 \
        }                                                                               \
    } while (0)

/* `status` is `want`, and the last error mentions `needle` (NULL: any non-empty message). */
static void expect_error(ditail_status status, ditail_status want, const char *needle,
                         int line) {
    const char *message = ditail_last_error();
    if (status != want) {
        fprintf(stderr, "line %d: status %d (%s), expected %d (%s); message: %s\n", line,
                status, ditail_status_string(status), want, ditail_status_string(want),
                message);
        failures++;
    } else if (message == NULL || message[0] == '\0' ||
               (needle != NULL && strstr(message, needle) == NULL)) {
        fprintf(stderr, "line %d: message \"%s\" lacks \"%s\"\n", line,
                message ? message : "(null)", needle ? needle : "(anything)");
        failures++;
    } else {
        printf("ok line %d: %s: %s\n", line, ditail_status_string(status), message);
    }
}
#define EXPECT_ERROR(call, want, needle) expect_error((call), (want), (needle), __LINE__)

static char path_buf[4096];
static const char *join(const char *a, const char *b) {
    snprintf(path_buf, sizeof path_buf, "%s/%s", a, b);
    return path_buf;
}

/* Cancels at the second step it sees, counting the calls. */
static bool cancel_at_two(int phase, int step, int total, void *user_data) {
    int *calls = user_data;
    (*calls)++;
    (void)phase;
    (void)total;
    return step < 2;
}

/* Counts steps per phase: user_data is int[3]. */
static bool count_steps(int phase, int step, int total, void *user_data) {
    int *counts = user_data;
    if (phase >= 0 && phase < 3 && step >= 1 && step <= total) {
        counts[phase]++;
    }
    return true;
}

/* Another thread's failure does not touch this thread's last error. */
static void *fail_elsewhere(void *arg) {
    ditail_model *model = NULL;
    ditail_model_spec spec = ditail_model_default_spec();
    spec.model = "/no/such/model/in/another/thread";
    ditail_status status = ditail_model_load(arg, &spec, &model);
    return (void *)(size_t)(status == DITAIL_STATUS_NOT_FOUND &&
                            strstr(ditail_last_error(), "another/thread") != NULL);
}

/* A sampling run on its own thread, sharing the model and inversion with others. */
struct run {
    ditail_model *target;
    ditail_inversion *inv;
    const ditail_sampling_settings *settings;
    atomic_int stage; /* with `hold`: 1 once the run has started, 2 to let it go on */
    bool hold;
    ditail_status status;
    uint8_t *rgb;
};

static bool hold_first_step(int phase, int step, int total, void *user_data) {
    struct run *r = user_data;
    (void)phase;
    (void)total;
    if (r->hold && step == 1) {
        atomic_store(&r->stage, 1);
        while (atomic_load(&r->stage) != 2) {
            sched_yield();
        }
    }
    return true;
}

static void *sample_and_decode(void *arg) {
    struct run *r = arg;
    ditail_latents *latents = NULL;
    r->status = ditail_sample(r->target, r->inv, r->settings, hold_first_step, r, &latents);
    if (r->status == DITAIL_STATUS_OK) {
        r->status = ditail_decode(r->target, latents, &r->rgb, NULL, NULL);
    }
    ditail_latents_free(latents);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODELS_DIR CONTENT_PNG OUTPUT_DIR\n", argv[0]);
        return 2;
    }
    const char *models = argv[1], *content = argv[2], *out_dir = argv[3];
    char tiny_a[4096], tiny_b[4096];
    snprintf(tiny_a, sizeof tiny_a, "%s/tiny-a", models);
    snprintf(tiny_b, sizeof tiny_b, "%s/tiny-b", models);

    EXPECT(ditail_api_version() == DITAIL_API_VERSION);
    EXPECT(strcmp(ditail_status_string(DITAIL_STATUS_CANCELLED), "cancelled") == 0);
    EXPECT(strcmp(ditail_status_string(12345), "unknown status") == 0);
    EXPECT(strcmp(ditail_last_error(), "") == 0);

    /* Contexts: a struct_size the library does not know, an enum value that is none. */
    ditail_context *ctx = (ditail_context *)1;
    ditail_context_settings cs = ditail_context_default_settings();
    cs.struct_size = sizeof cs + 8;
    EXPECT_ERROR(ditail_context_new(&cs, &ctx), DITAIL_STATUS_INVALID_ARGUMENT, "struct_size");
    EXPECT(ctx == NULL);
    cs = ditail_context_default_settings();
    cs.backend = (ditail_backend)42;
    EXPECT_ERROR(ditail_context_new(&cs, &ctx), DITAIL_STATUS_INVALID_ARGUMENT, "42");
    EXPECT_ERROR(ditail_context_new(NULL, &ctx), DITAIL_STATUS_INVALID_ARGUMENT, "settings");
    cs = ditail_context_default_settings();
    cs.backend = DITAIL_BACKEND_CPU;
    cs.dtype = DITAIL_DTYPE_F32;
    EXPECT_ERROR(ditail_context_new(&cs, NULL), DITAIL_STATUS_INVALID_ARGUMENT, "out");
    EXPECT(ditail_context_new(&cs, &ctx) == DITAIL_STATUS_OK);
    EXPECT(strcmp(ditail_last_error(), "") == 0);
    ditail_backend backend = DITAIL_BACKEND_AUTO;
    ditail_dtype dtype = DITAIL_DTYPE_AUTO;
    EXPECT(ditail_context_info(ctx, &backend, &dtype) == DITAIL_STATUS_OK);
    EXPECT(backend == DITAIL_BACKEND_CPU && dtype == DITAIL_DTYPE_F32);

    /* Models: a path that does not exist, NULL and wrong fields, then the real ones. */
    ditail_model *model = (ditail_model *)1;
    ditail_model_spec spec = ditail_model_default_spec();
    spec.model = "/no/such/model.safetensors";
    EXPECT_ERROR(ditail_model_load(ctx, &spec, &model), DITAIL_STATUS_NOT_FOUND,
                 "/no/such/model.safetensors");
    EXPECT(model == NULL);
    spec.model = NULL;
    EXPECT_ERROR(ditail_model_load(ctx, &spec, &model), DITAIL_STATUS_INVALID_ARGUMENT,
                 "spec->model");
    spec.model = tiny_a;
    spec.n_loras = 2;
    EXPECT_ERROR(ditail_model_load(ctx, &spec, &model), DITAIL_STATUS_INVALID_ARGUMENT,
                 "loras");
    ditail_lora lora = {"/no/such/lora.safetensors", 0.7f};
    spec.loras = &lora;
    spec.n_loras = 1;
    EXPECT_ERROR(ditail_model_load(ctx, &spec, &model), DITAIL_STATUS_NOT_FOUND,
                 "lora.safetensors");
    spec.loras = NULL;
    spec.n_loras = 0;
    spec.clip_skip = -1;
    EXPECT_ERROR(ditail_model_load(ctx, &spec, &model), DITAIL_STATUS_SETTINGS, "clip_skip");
    spec.clip_skip = 99; /* deeper than the encoder: refused at load, not at each prompt */
    EXPECT_ERROR(ditail_model_load(ctx, &spec, &model), DITAIL_STATUS_SETTINGS, "clip skip 99");
    spec = ditail_model_default_spec();
    spec.model = tiny_a;
    EXPECT_ERROR(ditail_model_load(NULL, &spec, &model), DITAIL_STATUS_INVALID_ARGUMENT,
                 "ctx is NULL");
    /* Offline: a repo id (or a mistyped relative folder) not in the cache fails at once. */
    EXPECT(ditail_set_offline(true) == DITAIL_STATUS_OK);
    spec.model = "someone/not-in-the-cache";
    EXPECT_ERROR(ditail_model_load(ctx, &spec, &model), DITAIL_STATUS_NOT_FOUND, "downloads are off");
    EXPECT(ditail_set_offline(false) == DITAIL_STATUS_OK);
    spec.model = content; /* a PNG is no checkpoint */
    ditail_status status = ditail_model_load(ctx, &spec, &model);
    EXPECT(status == DITAIL_STATUS_UNSUPPORTED_FILE || status == DITAIL_STATUS_NOT_FOUND);

    pthread_t thread;
    void *thread_ok = NULL;
    EXPECT(pthread_create(&thread, NULL, fail_elsewhere, ctx) == 0);
    EXPECT(pthread_join(thread, &thread_ok) == 0);
    EXPECT(thread_ok != NULL);
    EXPECT(strstr(ditail_last_error(), "another/thread") == NULL);

    ditail_model *source = NULL, *target = NULL;
    spec.model = tiny_a;
    EXPECT(ditail_model_load(ctx, &spec, &source) == DITAIL_STATUS_OK);
    spec.model = tiny_b;
    EXPECT(ditail_model_load(ctx, &spec, &target) == DITAIL_STATUS_OK);

    /* Inversion settings: NULL prompt, NaN alpha, 0 steps, a struct of another size. */
    ditail_inversion *inv = (ditail_inversion *)1;
    ditail_inversion_settings is = ditail_inversion_default_settings();
    is.size = SIZE;
    is.steps = 4;
    EXPECT_ERROR(ditail_invert_file(source, content, &is, NULL, NULL, &inv),
                 DITAIL_STATUS_INVALID_ARGUMENT, "prompt");
    EXPECT(inv == NULL);
    is.prompt = "a photo of a cat";
    is.alpha = NAN;
    EXPECT_ERROR(ditail_invert_file(source, content, &is, NULL, NULL, &inv),
                 DITAIL_STATUS_SETTINGS, "alpha");
    is.alpha = 2.0;
    is.steps = 0;
    EXPECT_ERROR(ditail_invert_file(source, content, &is, NULL, NULL, &inv),
                 DITAIL_STATUS_SETTINGS, "steps");
    is.steps = 4;
    is.struct_size = 8;
    EXPECT_ERROR(ditail_invert_file(source, content, &is, NULL, NULL, &inv),
                 DITAIL_STATUS_INVALID_ARGUMENT, "struct_size");
    is.struct_size = sizeof is;
    EXPECT_ERROR(ditail_invert_file(source, "/no/such/image.png", &is, NULL, NULL, &inv),
                 DITAIL_STATUS_NOT_FOUND, "/no/such/image.png");
    EXPECT_ERROR(ditail_invert_file(NULL, content, &is, NULL, NULL, &inv),
                 DITAIL_STATUS_INVALID_ARGUMENT, "source is NULL");
    uint8_t pixel[3] = {1, 2, 3};
    EXPECT_ERROR(ditail_invert(source, pixel, 0, 1, &is, NULL, NULL, &inv),
                 DITAIL_STATUS_INVALID_ARGUMENT, "0 x 1");
    EXPECT_ERROR(ditail_invert(source, NULL, 1, 1, &is, NULL, NULL, &inv),
                 DITAIL_STATUS_INVALID_ARGUMENT, "rgb is NULL");

    /* Cancel from the callback: the run stops at the step it said so. */
    int calls = 0;
    EXPECT_ERROR(ditail_invert_file(source, content, &is, cancel_at_two, &calls, &inv),
                 DITAIL_STATUS_CANCELLED, "cancelled");
    EXPECT(calls == 2);
    EXPECT(inv == NULL);

    /* The content as pixels, then the full transfer with step counts checked. */
    uint8_t *pixels = NULL;
    uint32_t width = 0, height = 0;
    EXPECT(ditail_load_image(content, &pixels, &width, &height) == DITAIL_STATUS_OK);
    EXPECT(width > 0 && height > 0);
    int counts[3] = {0, 0, 0};
    EXPECT(ditail_invert(source, pixels, width, height, &is, count_steps, counts, &inv) ==
           DITAIL_STATUS_OK);
    EXPECT(counts[DITAIL_PHASE_INVERSION] == 4);
    EXPECT(ditail_rgb_free(pixels) == DITAIL_STATUS_OK);
    EXPECT_ERROR(ditail_rgb_free(pixels), DITAIL_STATUS_INVALID_HANDLE, "freed twice");

    /* Sampling: wrong settings, step counts the inversion cannot serve, wrong handle kinds. */
    ditail_latents *latents = (ditail_latents *)1;
    ditail_sampling_settings ss = ditail_sampling_default_settings();
    ss.prompt = "a photo of a cat";
    ss.steps = 4;
    ss.conv_ratio = 1.5;
    EXPECT_ERROR(ditail_sample(target, inv, &ss, NULL, NULL, &latents), DITAIL_STATUS_SETTINGS,
                 "conv ratio");
    EXPECT(latents == NULL);
    ss.conv_ratio = 0.8;
    ss.omega = INFINITY;
    EXPECT_ERROR(ditail_sample(target, inv, &ss, NULL, NULL, &latents), DITAIL_STATUS_SETTINGS,
                 "omega");
    ss.omega = 15.0;
    ss.mask = "diagonal";
    status = ditail_sample(target, inv, &ss, NULL, NULL, &latents);
    EXPECT(status == DITAIL_STATUS_NOT_FOUND || status == DITAIL_STATUS_UNSUPPORTED_FILE);
    EXPECT(strstr(ditail_last_error(), "mask") != NULL);
    ss.mask = "left";
    ss.steps = 3;
    EXPECT_ERROR(ditail_sample(target, inv, &ss, NULL, NULL, &latents),
                 DITAIL_STATUS_INCOMPATIBLE, "step");
    ss.steps = 4;
    EXPECT_ERROR(ditail_sample((ditail_model *)inv, inv, &ss, NULL, NULL, &latents),
                 DITAIL_STATUS_INVALID_HANDLE, "model handle");
    EXPECT_ERROR(ditail_sample(target, (ditail_inversion *)target, &ss, NULL, NULL, &latents),
                 DITAIL_STATUS_INVALID_HANDLE, "inversion handle");
    calls = 0;
    EXPECT_ERROR(ditail_sample(target, inv, &ss, cancel_at_two, &calls, &latents),
                 DITAIL_STATUS_CANCELLED, "cancelled");
    EXPECT(calls == 2 && latents == NULL);
    EXPECT(ditail_sample(target, inv, &ss, count_steps, counts, &latents) == DITAIL_STATUS_OK);
    EXPECT(counts[DITAIL_PHASE_SAMPLING] == 4);

    /* Save and load the inversion; sample again from the loaded one. */
    EXPECT_ERROR(ditail_inversion_save(inv, "/no/such/dir/x.safetensors"),
                 DITAIL_STATUS_NOT_FOUND, "/no/such/dir");
    const char *inv_path = join(out_dir, "inversion.safetensors");
    char saved[4096];
    snprintf(saved, sizeof saved, "%s", inv_path);
    EXPECT(ditail_inversion_save(inv, saved) == DITAIL_STATUS_OK);
    ditail_inversion *loaded = NULL;
    EXPECT_ERROR(ditail_inversion_load(ctx, content, &loaded), DITAIL_STATUS_UNSUPPORTED_FILE,
                 NULL);
    EXPECT(ditail_inversion_load(ctx, saved, &loaded) == DITAIL_STATUS_OK);
    ditail_latents *again = NULL;
    EXPECT(ditail_sample(target, loaded, &ss, NULL, NULL, &again) == DITAIL_STATUS_OK);

    /* Decode; write; bad buffers. */
    uint8_t *rgb = (uint8_t *)1;
    EXPECT_ERROR(ditail_decode(target, NULL, &rgb, &width, &height),
                 DITAIL_STATUS_INVALID_ARGUMENT, "latents is NULL");
    EXPECT(rgb == NULL && width == 0 && height == 0);
    EXPECT(ditail_decode(target, latents, &rgb, &width, &height) == DITAIL_STATUS_OK);
    EXPECT((width == SIZE || height == SIZE) && width % 8 == 0 && height % 8 == 0);
    uint8_t *rgb2 = NULL;
    EXPECT(ditail_decode(target, again, &rgb2, NULL, NULL) == DITAIL_STATUS_OK);
    EXPECT(rgb != NULL && rgb2 != NULL && memcmp(rgb, rgb2, (size_t)width * height * 3) == 0);

    /* Injection sites (ditail_sample_at): a site the target lacks, or a name that is no
     * site, is refused by name; NULL takes the method's sites (ditail_sample's pixels); one
     * ResNet alone gives other pixels. */
    ditail_latents *at = (ditail_latents *)1;
    EXPECT_ERROR(ditail_sample_at(target, inv, &ss, "up_blocks.9.resnets.0", NULL, NULL, &at),
                 DITAIL_STATUS_SETTINGS, "up_blocks.9.resnets.0");
    EXPECT(at == NULL);
    EXPECT_ERROR(ditail_sample_at(target, inv, &ss, "mid_block.everything", NULL, NULL, &at),
                 DITAIL_STATUS_SETTINGS, "mid_block.everything");
    uint8_t *rgb_at = NULL;
    EXPECT(ditail_sample_at(target, inv, &ss, NULL, NULL, NULL, &at) == DITAIL_STATUS_OK);
    EXPECT(ditail_decode(target, at, &rgb_at, NULL, NULL) == DITAIL_STATUS_OK);
    EXPECT(rgb_at != NULL && memcmp(rgb, rgb_at, (size_t)width * height * 3) == 0);
    EXPECT(ditail_rgb_free(rgb_at) == DITAIL_STATUS_OK);
    EXPECT(ditail_latents_free(at) == DITAIL_STATUS_OK);
    EXPECT(ditail_sample_at(target, inv, &ss, "up_blocks.1.resnets.1", count_steps, counts,
                            &at) == DITAIL_STATUS_OK);
    EXPECT(ditail_decode(target, at, &rgb_at, NULL, NULL) == DITAIL_STATUS_OK);
    EXPECT(rgb_at != NULL && memcmp(rgb, rgb_at, (size_t)width * height * 3) != 0);
    EXPECT(ditail_rgb_free(rgb_at) == DITAIL_STATUS_OK);
    EXPECT(ditail_latents_free(at) == DITAIL_STATUS_OK);

    /* The whole transfer in one call (ditail_transfer_file), checked as the command checks
     * it before anything loads. */
    ditail_model_spec sa = ditail_model_default_spec(), sb = ditail_model_default_spec();
    sa.model = tiny_a;
    sb.model = tiny_b;
    char out_png[4096];
    snprintf(out_png, sizeof out_png, "%s", join(out_dir, "transfer.png"));
    EXPECT_ERROR(ditail_transfer_file(NULL, &sa, &sb, content, &is, &ss, out_png, NULL, NULL),
                 DITAIL_STATUS_INVALID_ARGUMENT, "ctx is NULL");
    EXPECT_ERROR(ditail_transfer_file(ctx, &sa, &sb, content, &is, &ss, NULL, NULL, NULL),
                 DITAIL_STATUS_INVALID_ARGUMENT, "output_path");
    status = ditail_transfer_file(ctx, &sa, &sb, content, &is, &ss, "/no/such/dir/x.png", NULL,
                                  NULL);
    EXPECT(status != DITAIL_STATUS_OK && strstr(ditail_last_error(), "/no/such/dir") != NULL);
    ss.steps = 3;
    EXPECT_ERROR(ditail_transfer_file(ctx, &sa, &sb, content, &is, &ss, out_png, NULL, NULL),
                 DITAIL_STATUS_SETTINGS, "inversion steps 4");
    ss.steps = 4;
    calls = 0;
    EXPECT_ERROR(
        ditail_transfer_file(ctx, &sa, &sb, content, &is, &ss, out_png, cancel_at_two, &calls),
        DITAIL_STATUS_CANCELLED, "cancelled");
    EXPECT(calls == 2 && fopen(out_png, "rb") == NULL);
    EXPECT(ditail_transfer_file(ctx, &sa, &sb, content, &is, &ss, out_png, NULL, NULL) ==
           DITAIL_STATUS_OK);
    FILE *written = fopen(out_png, "rb");
    EXPECT(written != NULL);
    fclose(written);

    /* Two threads sample with one model from one inversion at once: same pixels. */
    size_t bytes = (size_t)width * height * 3;
    struct run runs[2] = {{target, inv, &ss, 0, false, DITAIL_STATUS_INTERNAL, NULL},
                          {target, inv, &ss, 0, false, DITAIL_STATUS_INTERNAL, NULL}};
    pthread_t threads[2];
    for (int i = 0; i < 2; i++) {
        EXPECT(pthread_create(&threads[i], NULL, sample_and_decode, &runs[i]) == 0);
    }
    for (int i = 0; i < 2; i++) {
        EXPECT(pthread_join(threads[i], NULL) == 0);
        EXPECT(runs[i].status == DITAIL_STATUS_OK);
        EXPECT(runs[i].rgb != NULL && memcmp(runs[i].rgb, rgb, bytes) == 0);
        EXPECT(ditail_rgb_free(runs[i].rgb) == DITAIL_STATUS_OK);
    }

    /* Freeing an inversion another thread is sampling from: that run finishes, later
     * uses are refused. */
    ditail_inversion *doomed = NULL;
    EXPECT(ditail_inversion_load(ctx, saved, &doomed) == DITAIL_STATUS_OK);
    struct run held = {target, doomed, &ss, 0, true, DITAIL_STATUS_INTERNAL, NULL};
    EXPECT(pthread_create(&threads[0], NULL, sample_and_decode, &held) == 0);
    while (atomic_load(&held.stage) != 1) {
        sched_yield();
    }
    EXPECT(ditail_inversion_free(doomed) == DITAIL_STATUS_OK);
    atomic_store(&held.stage, 2);
    EXPECT(pthread_join(threads[0], NULL) == 0);
    EXPECT(held.status == DITAIL_STATUS_OK);
    EXPECT(held.rgb != NULL && memcmp(held.rgb, rgb, bytes) == 0);
    EXPECT(ditail_rgb_free(held.rgb) == DITAIL_STATUS_OK);
    EXPECT_ERROR(ditail_inversion_save(doomed, saved), DITAIL_STATUS_INVALID_HANDLE,
                 "already freed");
    EXPECT(ditail_write_png(join(out_dir, "errors-test.png"), rgb, width, height) ==
           DITAIL_STATUS_OK);
    EXPECT_ERROR(ditail_write_png("/no/such/dir/x.png", rgb, width, height),
                 DITAIL_STATUS_NOT_FOUND, "/no/such/dir/x.png");
    EXPECT_ERROR(ditail_write_png(join(out_dir, "x.png"), NULL, 4, 4),
                 DITAIL_STATUS_INVALID_ARGUMENT, "rgb is NULL");
    EXPECT_ERROR(ditail_rgb_free(pixel), DITAIL_STATUS_INVALID_HANDLE, "not a pixel buffer");

    /* Text to image, cancelled and whole. */
    ditail_generation_settings gs = ditail_generation_default_settings();
    gs.prompt = "a castle";
    gs.width = SIZE - 4;
    gs.height = SIZE;
    gs.steps = 2;
    ditail_latents *generated = NULL;
    EXPECT_ERROR(ditail_generate(source, &gs, NULL, NULL, &generated), DITAIL_STATUS_SETTINGS,
                 "multiples of 8");
    gs.width = SIZE;
    EXPECT(ditail_generate(source, &gs, count_steps, counts, &generated) == DITAIL_STATUS_OK);
    EXPECT(counts[DITAIL_PHASE_GENERATION] == 2);
    EXPECT(ditail_latents_free(generated) == DITAIL_STATUS_OK);

    /* Textual-inversion embeddings: named in a prompt; another family's refused by name. */
    char embeddings[4096];
    snprintf(embeddings, sizeof embeddings, "%s/../prompts/embeddings", models);
    ditail_model *with_emb = NULL;
    spec.model = tiny_a;
    EXPECT_ERROR(ditail_model_load_with_embeddings(ctx, &spec, "/no/such/embeddings", &with_emb),
                 DITAIL_STATUS_NOT_FOUND, "/no/such/embeddings");
    EXPECT(ditail_model_load_with_embeddings(ctx, &spec, embeddings, &with_emb) ==
           DITAIL_STATUS_OK);
    gs.prompt = "a castle, (EasyNeg:0.8)";
    EXPECT(ditail_generate(with_emb, &gs, NULL, NULL, &generated) == DITAIL_STATUS_OK);
    EXPECT(ditail_latents_free(generated) == DITAIL_STATUS_OK);
    gs.prompt = "a castle, XlNeg";
    EXPECT_ERROR(ditail_generate(with_emb, &gs, NULL, NULL, &generated),
                 DITAIL_STATUS_INCOMPATIBLE, "XlNeg");
    EXPECT(ditail_model_free(with_emb) == DITAIL_STATUS_OK);
    gs.prompt = "a castle";

    /* Freed handles and double frees are refused; NULL frees are no-ops. */
    EXPECT(ditail_rgb_free(rgb) == DITAIL_STATUS_OK);
    EXPECT(ditail_rgb_free(rgb2) == DITAIL_STATUS_OK);
    EXPECT(ditail_rgb_free(NULL) == DITAIL_STATUS_OK);
    EXPECT(ditail_latents_free(again) == DITAIL_STATUS_OK);
    EXPECT(ditail_latents_free(latents) == DITAIL_STATUS_OK);
    EXPECT_ERROR(ditail_latents_free(latents), DITAIL_STATUS_INVALID_HANDLE, "latents");
    EXPECT(ditail_inversion_free(loaded) == DITAIL_STATUS_OK);
    EXPECT(ditail_inversion_free(inv) == DITAIL_STATUS_OK);
    EXPECT_ERROR(ditail_sample(target, inv, &ss, NULL, NULL, &latents),
                 DITAIL_STATUS_INVALID_HANDLE, "already freed");
    EXPECT_ERROR(ditail_inversion_save(inv, saved), DITAIL_STATUS_INVALID_HANDLE, "inv");
    /* The context goes first: the models keep working. */
    EXPECT(ditail_context_free(ctx) == DITAIL_STATUS_OK);
    EXPECT_ERROR(ditail_context_free(ctx), DITAIL_STATUS_INVALID_HANDLE, "context");
    EXPECT_ERROR(ditail_model_load(ctx, &spec, &model), DITAIL_STATUS_INVALID_HANDLE, "ctx");
    EXPECT(ditail_generate(target, &gs, NULL, NULL, &generated) == DITAIL_STATUS_OK);
    EXPECT(ditail_latents_free(generated) == DITAIL_STATUS_OK);
    EXPECT(ditail_model_free(target) == DITAIL_STATUS_OK);
    EXPECT(ditail_model_free(source) == DITAIL_STATUS_OK);
    EXPECT_ERROR(ditail_model_free(source), DITAIL_STATUS_INVALID_HANDLE, "model");
    EXPECT(ditail_model_free(NULL) == DITAIL_STATUS_OK);
    EXPECT(ditail_context_free(NULL) == DITAIL_STATUS_OK);

    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("all error paths ok\n");
    return 0;
}
