// A sanitized build's self-check: one bug of the kind each sanitizer exists
// to catch. canary_test.sh runs it and requires the report, so a build whose
// flags did not take (and would pass every test silently) fails instead.
//   canary heap   reads past a heap block (AddressSanitizer)
//   canary ub     overflows a signed int (UndefinedBehaviorSanitizer)
//   canary race   two threads write one int without a lock (ThreadSanitizer)
#include <climits>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

// Read through a function UBSan leaves alone, so the bad read reaches ASan.
__attribute__((noinline, no_sanitize("undefined"))) int ReadAt(const int* p, int i) { return p[i]; }

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "race") {
    int counter = 0;
    std::thread a([&] { for (int i = 0; i < 100000; ++i) ++counter; });
    std::thread b([&] { for (int i = 0; i < 100000; ++i) ++counter; });
    a.join();
    b.join();
    std::printf("%d\n", counter);
  } else if (mode == "ub") {
    volatile int big = INT_MAX;
    const int sum = big + argc;  // signed overflow
    std::printf("%d\n", sum);
  } else if (mode == "heap") {
    int* values = new int[4];
    std::memset(values, 0, 4 * sizeof(int));
    const int past_the_end = ReadAt(values, argc + 2);  // heap-buffer-overflow
    delete[] values;
    std::printf("%d\n", past_the_end);
  } else {
    std::fprintf(stderr, "usage: %s heap|ub|race\n", argv[0]);
    return 2;
  }
  return 0;
}
