// The Prometheus endpoint of the real daemon, scraped over HTTP and parsed
// with Prometheus' own Python parser (Debian's python3-prometheus-client);
// and the optional log file.
#include <cmath>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "common/version.h"
#include "harness.h"

namespace mycel::it {
namespace {

// `text` parsed by tests/integration/parse_metrics.py: {"families": {...},
// "samples": {"name{k=v,...}": value}}; nullopt (after a failure) if invalid.
std::optional<Json> ParseExposition(const std::string& text, const std::string& scratch) {
  WriteFileOrDie(scratch + "/scrape.txt", text);
  CommandResult r = RunCommand({"/bin/sh", "-c",
                                "/usr/bin/python3 " + std::string(MYCEL_SOURCE_DIR) +
                                    "/tests/integration/parse_metrics.py < " + scratch + "/scrape.txt"},
                               scratch, 60);
  EXPECT_EQ(r.exit_code, 0) << r.Describe() << "\n" << text;
  if (r.exit_code != 0) return std::nullopt;
  return ParseJson(r.out);
}

double SampleOf(const Json& parsed, const std::string& key) {
  const Json* samples = parsed.Find("samples");
  return samples ? samples->Num(key) : std::nan("");
}

TEST(MetricsTest, EndpointIsValidPrometheusTextThatAgreesWithStatus) {
  TempDir tmp;
  const int port = FreePort();
  ConfigSpec spec;
  spec.extra_node = "metrics_listen = \"127.0.0.1:" + std::to_string(port) +
                    "\"\nlog_file = \"logs/myceld.log\"\nlog_max_bytes = 65536\n";
  TestNode node(tmp.path(), "metered", spec);
  ASSERT_TRUE(node.daemon().Start());

  // Before any data: waiting for data, nothing trained.
  HttpReply r = HttpRequest(port, "GET", "/metrics");
  ASSERT_EQ(r.status, 200) << r.head;
  EXPECT_NE(r.head.find("text/plain; version=0.0.4"), std::string::npos) << r.head;
  auto m = ParseExposition(r.body, tmp.path());
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(SampleOf(*m, "mycel_training_steps_total{}"), 0);
  EXPECT_EQ(SampleOf(*m, "mycel_training_state{state=waiting_for_data}"), 1) << r.body;
  EXPECT_EQ(SampleOf(*m, "mycel_training_state{state=training}"), 0);
  EXPECT_EQ(m->Find("families")->Str("mycel_training_steps"), "counter") << r.body;
  EXPECT_EQ(m->Find("families")->Str("mycel_validation_accuracy_ratio"), "gauge");

  ASSERT_EQ(node.Mycel({"ingest", T10kImages(), T10kLabels()}).exit_code, 0);
  ASSERT_TRUE(node.WaitForStepsAbove(100, 90));
  ASSERT_TRUE(PollUntil([&] { return node.StatusNum("val_accuracy") > 0; }, 60));

  // Counters sit between two status readings taken around the scrape.
  const double steps_before = node.StatusNum("steps");
  r = HttpRequest(port, "GET", "/metrics");
  const auto after = node.Status();
  ASSERT_TRUE(after.has_value());
  ASSERT_EQ(r.status, 200);
  m = ParseExposition(r.body, tmp.path());
  ASSERT_TRUE(m.has_value());
  const double steps = SampleOf(*m, "mycel_training_steps_total{}");
  EXPECT_GE(steps, steps_before);
  EXPECT_LE(steps, after->Num("steps"));
  EXPECT_GT(SampleOf(*m, "mycel_training_samples_total{}"), steps);  // batches of many
  EXPECT_EQ(SampleOf(*m, "mycel_examples{split=train}") + SampleOf(*m, "mycel_examples{split=validation}"),
            kT10kCount);
  EXPECT_EQ(SampleOf(*m, "mycel_examples{split=train}"), after->Num("examples_train"));
  const double acc = SampleOf(*m, "mycel_validation_accuracy_ratio{}");
  EXPECT_GT(acc, 0.1);
  EXPECT_LE(acc, 1.0);
  EXPECT_GT(SampleOf(*m, "mycel_train_loss{}"), 0);
  EXPECT_EQ(SampleOf(*m, "mycel_model_parameters{kind=all}"), after->Num("parameters"));
  EXPECT_EQ(SampleOf(*m, "mycel_training_state{state=training}"), 1) << r.body;
  EXPECT_EQ(SampleOf(*m, std::string("mycel_info{model=mlp,node=metered,version=") + kVersion + "}"), 1);
  EXPECT_EQ(SampleOf(*m, "mycel_peers{}"), 0);

  // The state follows a pause, within seconds.
  ASSERT_EQ(node.Mycel({"pause"}).exit_code, 0);
  ASSERT_TRUE(PollUntil([&] {
    auto p = ParseExposition(HttpRequest(port, "GET", "/metrics").body, tmp.path());
    return p && SampleOf(*p, "mycel_training_state{state=paused}") == 1 &&
           SampleOf(*p, "mycel_training_state{state=training}") == 0;
  }, 10));

  // Only GET /metrics.
  EXPECT_EQ(HttpRequest(port, "GET", "/").status, 404);
  EXPECT_EQ(HttpRequest(port, "DELETE", "/metrics").status, 405);

  // The log file got the daemon's lines too.
  const std::string log_file = tmp.path() + "/logs/myceld.log";
  ASSERT_TRUE(Exists(log_file));
  const std::string logged = ReadFileOrDie(log_file);
  EXPECT_NE(logged.find("myceld running"), std::string::npos) << logged;
  EXPECT_NE(logged.find("metrics on http://127.0.0.1:" + std::to_string(port) + "/metrics"), std::string::npos)
      << logged;
  // A start with metrics on is quiet: no warning from libmicrohttpd about its own options.
  EXPECT_EQ(logged.find(" W [metrics]"), std::string::npos) << logged;
  EXPECT_EQ(node.daemon().LogSinceStart().find(" W [metrics]"), std::string::npos) << node.daemon().LogSinceStart();

  EXPECT_EQ(node.daemon().Stop(), 0);
  EXPECT_EQ(HttpRequest(port, "GET", "/metrics").status, 0);  // gone with the daemon
}

TEST(MetricsTest, BusyMetricsPortIsLoggedAndTrainingGoesOn) {
  // Metrics are optional; the daemon's job is training. A taken port is an
  // error in the log, not a daemon that will not start.
  TempDir tmp;
  const int port = FreePort();
  ConfigSpec spec;
  spec.extra_node = "metrics_listen = \"127.0.0.1:" + std::to_string(port) + "\"\n";
  TestNode first(tmp.path(), "first", spec);
  TestNode second(tmp.path(), "second", spec);
  ASSERT_TRUE(first.daemon().Start());
  ASSERT_TRUE(second.daemon().Start());
  EXPECT_NE(second.daemon().Log().find("cannot listen on 127.0.0.1:" + std::to_string(port)), std::string::npos)
      << second.daemon().Log();
  ASSERT_EQ(second.Mycel({"ingest", T10kImages(), T10kLabels()}).exit_code, 0);
  EXPECT_TRUE(second.WaitForStepsAbove(10, 90));
  auto m = ParseExposition(HttpRequest(port, "GET", "/metrics").body, tmp.path());  // the first one is unharmed
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(SampleOf(*m, std::string("mycel_info{model=mlp,node=first,version=") + kVersion + "}"), 1);
  EXPECT_EQ(first.daemon().Stop(), 0);
  EXPECT_EQ(second.daemon().Stop(), 0);
}

}  // namespace
}  // namespace mycel::it
