/* mycel's C ABI: the public client (mycel/client.h) for any language with a
 * C foreign-function interface (Python ctypes, Rust, Go, Swift, ...).
 *
 *   mycel_client* c = NULL;
 *   if (mycel_open(NULL, NULL, &c) != MYCEL_OK) { ... mycel_open_error() ... }
 *   mycel_prediction top[3];
 *   size_t n = 0;
 *   if (mycel_predict(c, pixels, 784, top, 3, &n) != MYCEL_OK)
 *     fprintf(stderr, "%s\n", mycel_last_error(c));
 *   mycel_close(c);
 *
 * Errors: every call returns a mycel_status (MYCEL_OK = 0; the other values
 * match mycel::Status::Code and gRPC's codes). The message of the calling
 * thread's last failed call is mycel_last_error(client) (mycel_open_error()
 * for mycel_open). Nothing throws or aborts across this boundary.
 *
 * Ownership: a mycel_client is made by mycel_open and freed by mycel_close.
 * Strings returned (errors, a prediction's name) are the library's, kept per
 * thread: valid until the calling thread's next mycel call. Buffers passed
 * in are only read during the call.
 *
 * Thread-safety: a client may be used from several threads at once; each
 * thread has its own last error and strings.
 */
#ifndef MYCEL_MYCEL_H_
#define MYCEL_MYCEL_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define MYCEL_C_EXPORT
#else
#define MYCEL_C_EXPORT __attribute__((visibility("default")))
#endif

typedef enum mycel_status {
  MYCEL_OK = 0,
  MYCEL_CANCELLED = 1,
  MYCEL_UNKNOWN = 2,
  MYCEL_INVALID_ARGUMENT = 3,
  MYCEL_DEADLINE_EXCEEDED = 4,
  MYCEL_NOT_FOUND = 5,
  MYCEL_ALREADY_EXISTS = 6,
  MYCEL_PERMISSION_DENIED = 7,
  MYCEL_RESOURCE_EXHAUSTED = 8,
  MYCEL_FAILED_PRECONDITION = 9,
  MYCEL_ABORTED = 10,
  MYCEL_OUT_OF_RANGE = 11,
  MYCEL_UNIMPLEMENTED = 12,
  MYCEL_INTERNAL = 13,
  MYCEL_UNAVAILABLE = 14 /* myceld is not running */
} mycel_status;

typedef struct mycel_client mycel_client; /* opaque */

typedef struct mycel_prediction {
  int64_t label;       /* class index, or byte value for a char_lm */
  double probability;
  const char* name;    /* [model] class_names[label], or "" (the library's: see Ownership) */
} mycel_prediction;

typedef struct mycel_daemon_status {
  char state[32];      /* training | resting | paused | waiting_for_data | ... (NUL-terminated) */
  char reason[128];    /* the state in words, cut to fit */
  int64_t steps;
  int64_t samples_trained;
  int64_t examples_train;
  int64_t examples_val;
  double steps_per_s;
  double train_loss;   /* NaN before the first step */
  double val_accuracy; /* NaN before the first validation pass */
  int64_t rounds;
  int32_t peers;
  int32_t peers_connected;
} mycel_daemon_status;

/* The library's version, "MAJOR.MINOR.PATCH". */
MYCEL_C_EXPORT const char* mycel_version(void);

/* Opens a client for the daemon at `socket_path`, or (NULL) the one the
 * config file `config_path` names (NULL: $MYCEL_CONFIG, else the default
 * config, else the default state directory). Connects lazily: the first call
 * says whether myceld answers. */
MYCEL_C_EXPORT mycel_status mycel_open(const char* socket_path, const char* config_path, mycel_client** out);
/* Why the calling thread's last mycel_open failed ("" if it did not). */
MYCEL_C_EXPORT const char* mycel_open_error(void);
/* Frees the client; NULL is a no-op. */
MYCEL_C_EXPORT void mycel_close(mycel_client* client);
/* The message of the calling thread's last failed call ("" if its last call succeeded). */
MYCEL_C_EXPORT const char* mycel_last_error(mycel_client* client);

MYCEL_C_EXPORT mycel_status mycel_status_get(mycel_client* client, mycel_daemon_status* out);
MYCEL_C_EXPORT mycel_status mycel_pause(mycel_client* client);
MYCEL_C_EXPORT mycel_status mycel_resume(mycel_client* client);

/* Classifier: the top (at most `capacity`) classes for one input of `width`
 * values, most likely first; *count is how many were written. */
MYCEL_C_EXPORT mycel_status mycel_predict(mycel_client* client, const float* values, size_t width,
                                          mycel_prediction* top, size_t capacity, size_t* count);

/* Stores `n` labelled examples (row i: values[i*width .. (i+1)*width), labels[i])
 * in one transaction, returning once committed. n <= 4096. Bad rows are
 * refused one by one; *stored and *refused (either may be NULL) count them. */
MYCEL_C_EXPORT mycel_status mycel_add_examples(mycel_client* client, const float* values, const int64_t* labels,
                                               size_t n, size_t width, int64_t* stored, int64_t* refused);
/* char_lm: stores a line of text (NUL-terminated) as examples. */
MYCEL_C_EXPORT mycel_status mycel_add_text(mycel_client* client, const char* text, int64_t* stored,
                                           int64_t* refused);

/* Calls on_change(status, user) now and at each change of state or reason,
 * until it returns 0, timeout_s passes (<= 0: no limit) or the daemon stops
 * (MYCEL_UNAVAILABLE). Blocks the calling thread. */
typedef int (*mycel_watch_fn)(const mycel_daemon_status* status, void* user);
MYCEL_C_EXPORT mycel_status mycel_watch(mycel_client* client, mycel_watch_fn on_change, void* user,
                                        double timeout_s);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MYCEL_MYCEL_H_ */
