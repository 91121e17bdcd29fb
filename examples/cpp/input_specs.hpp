// The examples' reader of NAME.inputs.json, the file perfopt.export and the
// fixture scripts put beside a model: [{"name": "mel", "dtype": "float32",
// "shape": [-1, 80, 100]}, ...] with -1 for the batch. Enough JSON for that
// one shape of file; the examples read shapes here instead of hard-coding them.
#pragma once

#include <cstdint>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace examples {

struct InputSpec {
  std::string name, dtype;
  std::vector<int64_t> shape;  // -1: the batch
};

inline std::string field(const std::string &object, const std::string &key) {
  auto at = object.find("\"" + key + "\"");
  if (at == std::string::npos) return "";
  auto colon = object.find(':', at);
  auto start = object.find_first_not_of(" \t\n", colon + 1);
  if (object[start] == '"') return object.substr(start + 1, object.find('"', start + 1) - start - 1);
  return object.substr(start + 1, object.find(']', start) - start - 1);  // a list of numbers
}

inline std::vector<InputSpec> read_input_specs(const std::string &model_path) {
  // A bundle (a folder, NAME.perfopt) keeps them inside.
  std::ifstream folder_probe(model_path + "/inputs.json");
  std::string path = folder_probe ? model_path + "/inputs.json"
                                  : model_path.substr(0, model_path.rfind('.')) + ".inputs.json";
  std::ifstream file(path);
  if (!file) throw std::runtime_error(path + ": no input specs beside the model (perfopt.export writes them)");
  std::stringstream text;
  text << file.rdbuf();
  std::string json = text.str();
  std::vector<InputSpec> specs;
  for (size_t open = json.find('{'); open != std::string::npos; open = json.find('{', open + 1)) {
    std::string object = json.substr(open, json.find('}', open) - open + 1);
    InputSpec spec{field(object, "name"), field(object, "dtype"), {}};
    std::stringstream dims(field(object, "shape"));
    for (std::string d; std::getline(dims, d, ',');) spec.shape.push_back(std::stoll(d));
    specs.push_back(spec);
  }
  return specs;
}

// The shape with `batch` where the spec says -1.
inline std::vector<int64_t> with_batch(const InputSpec &spec, int64_t batch) {
  std::vector<int64_t> shape = spec.shape;
  for (auto &d : shape) d = d < 0 ? batch : d;
  return shape;
}

inline size_t elements(const std::vector<int64_t> &shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

}  // namespace examples
