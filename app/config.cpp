// One TOML file for every process: `haca --config FILE <command> ...` (or HACA_CONFIG=FILE). Its
// tables are commands ([coordinator], [provider], [verifier], [submit], [demo], [model.gen], ...)
// and their keys the command's long flags without the dashes (sample-rate = 0.2). A flag given
// on the command line wins over the file. An unknown key, a value of the wrong type or out of
// range is refused with the key, the value and the reason, before anything runs.
// `haca config-example` prints every key of every command with its help and default
// (deploy/haca.example.toml is that output).
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <sstream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <toml++/toml.h>

#include "app/common.hpp"

namespace haca::app {
namespace {

// A TOML value as the text a flag would take.
std::string flag_text(const toml::node& n, const std::string& key) {
  if (auto s = n.as_string())
    return s->get();
  if (auto i = n.as_integer())
    return std::to_string(i->get());
  if (auto f = n.as_floating_point())
    return fmt::format("{}", f->get());
  if (auto b = n.as_boolean())
    return b->get() ? "true" : "false";
  throw CLI::ConfigError(fmt::format("config key '{}': {} is not a value a flag takes (a string, number, boolean or "
                                     "an array of them)",
                                     key, n.is_table() ? "a table in an array" : "a date or time"));
}

class toml_config : public CLI::Config {
public:
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
    const std::string text{std::istreambuf_iterator<char>(input), std::istreambuf_iterator<char>()};
    toml::table root;
    try {
      root = toml::parse(text);
    } catch (const toml::parse_error& e) {
      throw CLI::ConfigError(fmt::format("config file, line {}, column {}: {}", e.source().begin.line,
                                         e.source().begin.column, e.description()));
    }
    std::vector<CLI::ConfigItem> items;
    walk(root, {}, items);
    return items;
  }

  // The example file: every command's table, each key with its help and its default.
  std::string to_config(const CLI::App* app, bool, bool, std::string) const override {
    std::string out;
    write(app, {}, out);
    return out;
  }

private:
  // A table inside a table is a subcommand's ([model.gen]); anything else is a flag's value.
  static void walk(const toml::table& t, const std::vector<std::string>& parents, std::vector<CLI::ConfigItem>& items) {
    for (auto&& [k, v] : t) {
      const std::string key(k.str());
      if (const auto* sub = v.as_table()) {
        auto path = parents;
        path.push_back(key);
        walk(*sub, path, items);
        continue;
      }
      CLI::ConfigItem item;
      item.parents = parents;
      item.name = key;
      const auto full = fmt::format("{}{}{}", fmt::join(parents, "."), parents.empty() ? "" : ".", key);
      if (const auto* arr = v.as_array())
        for (auto&& e : *arr)
          item.inputs.push_back(flag_text(e, full));
      else
        item.inputs.push_back(flag_text(v, full));
      items.push_back(std::move(item));
    }
  }

  // An option's default as a TOML value: numbers and booleans bare, anything else a string.
  static std::string toml_value(const CLI::Option* o) {
    const auto d = o->get_default_str();
    if (o->get_type_size() == 0) // a flag
      return d.empty() ? "false" : d;
    const auto type = o->get_type_name();
    const bool bare = type.find("INT") != std::string::npos || type.find("FLOAT") != std::string::npos ||
                      type.find("BOOLEAN") != std::string::npos;
    if (bare)
      return d;
    std::string q = "\"";
    for (char c : d)
      q += c == '"' || c == '\\' ? std::string("\\") + c : std::string(1, c);
    return q + "\"";
  }

  static void write(const CLI::App* app, const std::vector<std::string>& path, std::string& out) {
    std::string body;
    for (const auto* o : app->get_options()) {
      if (o->get_lnames().empty() || !o->get_configurable() || o == app->get_help_ptr() ||
          o == app->get_help_all_ptr() || o == app->get_config_ptr())
        continue;
      std::istringstream help(o->get_description());
      for (std::string line; std::getline(help, line);)
        body += "# " + line + "\n";
      const auto& key = o->get_lnames().front();
      if (o->get_default_str().empty() && o->get_type_size() != 0)
        body += fmt::format("# {} =   (no default{})\n\n", key, o->get_required() ? "; required" : "");
      else
        body += fmt::format("# {} = {}\n\n", key, toml_value(o));
    }
    if (!body.empty()) {
      out += fmt::format("[{}]\n", fmt::join(path, "."));
      if (!app->get_description().empty())
        out += "# " + app->get_description() + "\n\n";
      out += body;
    }
    for (const auto* sub : app->get_subcommands([](const CLI::App*) { return true; })) {
      auto sub_path = path;
      sub_path.push_back(sub->get_name());
      write(sub, sub_path, out);
    }
  }
};

} // namespace

void add_config_support(CLI::App& app) {
  app.config_formatter(std::make_shared<toml_config>());
  app.allow_config_extras(CLI::config_extras_mode::error);
  app.set_config("--config", "",
                 "TOML file of settings for every command: a table per command, its keys the command's long flags "
                 "(deploy/haca.example.toml; HACA_CONFIG names it too); flags win over it");
}

// CLI11 reads a config option's environment variable only after the config file step, so
// HACA_CONFIG becomes a --config in front of the command line instead (unless one is given).
std::vector<std::string> arguments_with_config(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  const char* env = std::getenv("HACA_CONFIG");
  const bool given = std::any_of(args.begin(), args.end(),
                                 [](const std::string& a) { return a == "--config" || a.rfind("--config=", 0) == 0; });
  if (env && *env && !given && !args.empty())
    args.insert(args.begin() + 1, {"--config", env});
  return args;
}

void add_config_example_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("config-example", "Print every setting of every command as a commented TOML "
                                                   "file (the format of --config)");
  cmd->callback([&app] {
    std::cout << "# haca settings: one file for every process (haca --config FILE <command>, or HACA_CONFIG).\n"
                 "# A table per command, its keys the command's long flags; a flag on the command line wins.\n"
                 "# Generated by `haca config-example`: every key, with its help and default, commented out.\n\n"
              << app.config_to_str(true, true);
  });
}

std::string explain_config_error(const std::string& message) {
  const std::string extras = "INI was not able to parse ";
  if (message.rfind(extras, 0) == 0)
    return fmt::format("config: unknown key '{}' (a table per command, its keys the command's long flags; `haca "
                       "config-example` lists them all)",
                       message.substr(extras.size()));
  return message;
}

} // namespace haca::app
