// OptionProblem: what is wrong with one option, as each module's
// CheckOptions says it (federation/options.h, model/options.h): its key as
// the config file spells it, and why, e.g. {"mixing", "must be in (0, 1]
// (got 1.5)"}. The config reader turns it into `file:line: [section] key:
// why`; the module's Create into "section.key: why". Header-only.
#pragma once

#include <string>

namespace mycel {

struct OptionProblem {
  std::string key;
  std::string why;
};

}  // namespace mycel
