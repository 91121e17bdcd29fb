/* The C module's umbrella: perfopt's installed header (its folder comes from
 * pkg-config's --cflags). */
#include <perfopt.h>
