// Minimal test harness: CHECK keeps going and counts failures; main returns their number.
#pragma once
#include <cstdio>
#include <string>

inline int g_failures = 0;
#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      ++g_failures;                                                              \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                            \
  } while (0)
#define CHECK_MSG(cond, msg)                                                                       \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      ++g_failures;                                                                                \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s (%s)\n", __FILE__, __LINE__, #cond,             \
                   std::string(msg).c_str());                                                      \
    }                                                                                              \
  } while (0)
inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
