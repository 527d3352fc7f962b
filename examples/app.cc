// A small app on mycel's public C++ API: what an editor, a launcher or a
// browser extension's native host would do with the daemon on its laptop.
//
//   mycel-app status             the daemon's state
//   mycel-app learn  < rows.csv  stream "label,v1,...,vN" rows in as examples
//   mycel-app predict < row.csv  the top 3 classes for each "v1,...,vN" row
//   mycel-app watch [SECONDS]    print each change of state until SECONDS pass
//
// It finds the daemon as mycel does: $MYCEL_CONFIG, else the default config.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <mycel/client.h>

namespace {

int Die(const mycel::Status& s) {
  std::cerr << "mycel-app: " << s.ToString() << "\n";
  return 1;
}

std::vector<float> Values(const std::string& csv) {
  std::vector<float> v;
  std::stringstream in(csv);
  for (std::string field; std::getline(in, field, ',');) v.push_back(std::strtof(field.c_str(), nullptr));
  return v;
}

int Learn(mycel::Client& client) {
  std::unique_ptr<mycel::ExampleStream> stream;
  mycel::Status s = client.OpenExampleStream(1000, &stream);
  if (!s.ok()) return Die(s);
  for (std::string line; std::getline(std::cin, line);) {
    const size_t comma = line.find(',');
    if (comma == std::string::npos) continue;
    s = stream->Add(mycel::Example::Labelled(std::atoll(line.substr(0, comma).c_str()), Values(line.substr(comma + 1))));
    if (!s.ok()) return Die(s);
  }
  mycel::AddResult total;
  s = stream->Finish(&total);
  if (!s.ok()) return Die(s);
  for (const mycel::Refusal& r : total.refused) std::cerr << "row " << r.index + 1 << " refused: " << r.reason << "\n";
  std::cout << "stored " << total.stored << ", already stored " << total.duplicates << ", refused "
            << total.refused.size() << "\n";
  return 0;
}

int Predict(mycel::Client& client) {
  for (std::string line; std::getline(std::cin, line);) {
    std::vector<mycel::Prediction> top;
    mycel::Status s = client.Predict(Values(line), 3, &top);
    if (!s.ok()) return Die(s);
    for (const mycel::Prediction& p : top) {
      std::printf("%lld %.3f %s  ", static_cast<long long>(p.label), p.probability, p.name.c_str());
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "status";
  std::unique_ptr<mycel::Client> client;
  mycel::Status s = mycel::Client::Open(mycel::ClientOptions(), &client);
  if (!s.ok()) return Die(s);
  if (cmd == "learn") return Learn(*client);
  if (cmd == "predict") return Predict(*client);
  if (cmd == "watch") {
    s = client->Watch(
        [](const mycel::DaemonStatus& st) {
          std::cout << st.state << ": " << st.reason << std::endl;
          return true;
        },
        argc > 2 ? std::atof(argv[2]) : 0);
    return s.ok() ? 0 : Die(s);
  }
  mycel::DaemonStatus st;
  s = client->GetStatus(&st);
  if (!s.ok()) return Die(s);
  std::cout << st.node_name << ": " << st.state << " (" << st.reason << "), " << st.steps << " steps, "
            << st.examples_train + st.examples_val << " examples, library " << mycel::Version() << "\n";
  return 0;
}
