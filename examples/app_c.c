/* The daemon from C (mycel/mycel.h): its state, then a prediction for an
 * all-zero input of WIDTH values (default 784, a 28x28 image).
 *   mycel-app-c [WIDTH] */
#include <stdio.h>
#include <stdlib.h>

#include <mycel/mycel.h>

int main(int argc, char** argv) {
  size_t width = argc > 1 ? (size_t)atol(argv[1]) : 784;
  mycel_client* client = NULL;
  if (mycel_open(NULL, NULL, &client) != MYCEL_OK) {
    fprintf(stderr, "mycel-app-c: %s\n", mycel_open_error());
    return 1;
  }
  mycel_daemon_status st;
  if (mycel_status_get(client, &st) != MYCEL_OK) {
    fprintf(stderr, "mycel-app-c: %s\n", mycel_last_error(client));
    mycel_close(client);
    return 1;
  }
  printf("state %s (%s), %lld examples\n", st.state, st.reason, (long long)(st.examples_train + st.examples_val));
  float* zeros = calloc(width, sizeof(float));
  mycel_prediction top[3];
  size_t n = 0;
  mycel_status code = mycel_predict(client, zeros, width, top, 3, &n);
  free(zeros);
  if (code != MYCEL_OK) {
    fprintf(stderr, "mycel-app-c: predict: %s\n", mycel_last_error(client));
    mycel_close(client);
    return 1;
  }
  for (size_t i = 0; i < n; i++) printf("%lld %.3f %s\n", (long long)top[i].label, top[i].probability, top[i].name);
  mycel_close(client);
  return 0;
}
