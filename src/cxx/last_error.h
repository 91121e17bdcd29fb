// The shim's thread-local last error. A header, not a .cpp: libperfopt and
// its separately loaded CUDA part (cuda.cpp, libperfopt_cuda.so.0) each keep
// their own, and each hands it out through its own pshim_*last_error().
#pragma once

#include <string>

namespace perfopt_shim {

// A host may call perfopt from its thread-exit destructors (a pthread key's,
// as Swift's Foundation.Thread does), after this thread's C++ thread-locals
// were destroyed: the flag (trivially destructible, so never destroyed) says
// so, and the destroyed string is then never touched.
inline thread_local bool last_error_gone = false;
struct LastError {
  std::string text;
  ~LastError() { last_error_gone = true; }
};
inline thread_local LastError last_error;

inline void set_last_error(std::string message) {
  if (!last_error_gone) last_error.text = std::move(message);
}
inline void clear_last_error() {
  if (!last_error_gone) last_error.text.clear();
}
// Valid until the next shim call on this thread.
inline const char *last_error_text() { return last_error_gone ? "" : last_error.text.c_str(); }

}  // namespace perfopt_shim
