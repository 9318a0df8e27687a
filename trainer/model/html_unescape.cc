// Python's html.unescape for CLIP's text cleaning: numeric references (with Python's invalid
// code point rules) and the named entities that occur in captions.
#include <cstdlib>
#include <string>
#include <unordered_map>

#include "trainer/model/tokenizer.h"

namespace reid::model {
namespace {

const std::unordered_map<std::string, char32_t>& NamedEntities() {
  static const std::unordered_map<std::string, char32_t> table = {
      {"amp", '&'},      {"lt", '<'},        {"gt", '>'},       {"quot", '"'},
      {"apos", '\''},    {"nbsp", 0xA0},     {"copy", 0xA9},    {"reg", 0xAE},
      {"trade", 0x2122}, {"hellip", 0x2026}, {"mdash", 0x2014}, {"ndash", 0x2013},
      {"lsquo", 0x2018}, {"rsquo", 0x2019},  {"ldquo", 0x201C}, {"rdquo", 0x201D},
      {"laquo", 0xAB},   {"raquo", 0xBB},    {"middot", 0xB7},  {"deg", 0xB0},
      {"times", 0xD7},   {"divide", 0xF7},   {"euro", 0x20AC},  {"pound", 0xA3},
      {"yen", 0xA5},     {"cent", 0xA2},     {"sect", 0xA7},    {"para", 0xB6},
      {"eacute", 0xE9},  {"egrave", 0xE8},   {"agrave", 0xE0},  {"aacute", 0xE1},
      {"uuml", 0xFC},    {"ouml", 0xF6},     {"auml", 0xE4},    {"szlig", 0xDF},
      {"ccedil", 0xE7},  {"ntilde", 0xF1},   {"iexcl", 0xA1},   {"iquest", 0xBF},
  };
  return table;
}

// Python's html._replace_charref for numeric references.
char32_t NumericCodePoint(const std::string& digits, bool hex) {
  const unsigned long long v = std::strtoull(digits.c_str(), nullptr, hex ? 16 : 10);
  if (digits.size() > 8 || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || v == 0) return 0xFFFD;
  static const char32_t kCp1252[32] = {
      0x20AC, 0x81,   0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
      0x2039, 0x0152, 0x8D,   0x017D, 0x8F,   0x90,   0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
      0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D,   0x017E, 0x0178};
  if (v >= 0x80 && v <= 0x9F) return kCp1252[v - 0x80];
  return static_cast<char32_t>(v);
}

bool IsHex(char c) { return isxdigit(static_cast<unsigned char>(c)) != 0; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

std::string HtmlUnescape(const std::string& text) {
  if (text.find('&') == std::string::npos) return text;
  std::string out;
  for (size_t i = 0; i < text.size();) {
    if (text[i] != '&') {
      out.push_back(text[i++]);
      continue;
    }
    size_t j = i + 1;
    if (j < text.size() && text[j] == '#') {
      const bool hex = j + 1 < text.size() && (text[j + 1] == 'x' || text[j + 1] == 'X');
      size_t k = j + (hex ? 2 : 1), d = k;
      while (k < text.size() && (hex ? IsHex(text[k]) : IsDigit(text[k]))) ++k;
      if (k > d) {
        out += Utf8FromCodePoint(NumericCodePoint(text.substr(d, k - d), hex));
        i = (k < text.size() && text[k] == ';') ? k + 1 : k;
        continue;
      }
    } else {
      size_t k = j;
      while (k < text.size() && k - j < 32 && isalnum(static_cast<unsigned char>(text[k]))) ++k;
      const std::string name = text.substr(j, k - j);
      auto it = NamedEntities().find(name);
      if (it != NamedEntities().end()) {
        out += Utf8FromCodePoint(it->second);
        i = (k < text.size() && text[k] == ';') ? k + 1 : k;
        continue;
      }
    }
    out.push_back(text[i++]);
  }
  return out;
}

}  // namespace reid::model
