/* perfopt's ExecuTorch part (shim.cpp), built by build.rs as a library of its
 * own, libperfopt_executorch.so.0, against the executorch wheel's runtime and
 * loaded by shim.rs the first time a .pte program is loaded: libperfopt
 * itself needs no ExecuTorch library.
 *
 * Every function catches every exception and checks every ExecuTorch Error:
 * the status is PET_OK or PET_FAILED, and pet_last_error() holds the message
 * and pet_last_code() the ExecuTorch Error code (0 where the failure was not
 * ExecuTorch's, -1 for an exception) until the next call on the same thread. A program is not safe for
 * concurrent calls: the Rust side runs one call at a time per program. */
#ifndef PERFOPT_EXECUTORCH_SHIM_H
#define PERFOPT_EXECUTORCH_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { PET_OK = 0, PET_FAILED = 1, PET_MAX_DIMS = 16 };

typedef struct pet_program pet_program;

/* One input or output of a method. tag: ExecuTorch's EValue tag (1 tensor,
 * 3 double, 4 int, 5 bool...); dtype: its ScalarType (c10's numbering);
 * sizes: the shape the program was made with, each an upper bound where
 * `dynamic` (1: bounded dynamic, 2: unbounded) is not 0; planned: 1 when its
 * memory is planned by the program (0: the caller's memory would be used as
 * it is); row_major: 1 when its dimension order is the default one. */
typedef struct pet_slot {
  int32_t tag;
  int32_t dtype;
  int32_t ndim;
  int32_t dynamic;
  int32_t planned;
  int32_t row_major;
  int64_t sizes[PET_MAX_DIMS];
} pet_slot;

/* A contiguous CPU tensor. In: borrowed for the call. Out: memory the program
 * owns, valid until its next call. */
typedef struct pet_tensor {
  void *data;
  int32_t dtype;
  int32_t ndim;
  int64_t sizes[PET_MAX_DIMS];
} pet_tensor;

const char *pet_last_error(void);
int32_t pet_last_code(void);
/* Loads a program, its structure verified (a damaged file is an error, not
 * a read out of bounds), read from its file (not mapped: a file rewritten
 * after the load does not change what runs). */
int pet_load(const char *path, pet_program **out);
void pet_free(pet_program *program);
/* The method names, each followed by '\n'; a too-small buffer sets *needed
 * and returns PET_FAILED with an empty message. */
int pet_method_names(pet_program *program, char *buf, size_t len, size_t *needed);
/* Loads the method (its memory planned) and says how many inputs and outputs
 * it has. */
int pet_method_io(pet_program *program, const char *method, size_t *inputs, size_t *outputs);
int pet_method_slot(pet_program *program, const char *method, int32_t output, size_t index, pet_slot *out);
/* Runs a method on tensors; outputs hold at most `capacity` entries (every
 * output must be a tensor). */
int pet_execute(pet_program *program, const char *method, const pet_tensor *inputs, size_t n_inputs,
                pet_tensor *outputs, size_t capacity, size_t *n_outputs);

#ifdef __cplusplus
}
#endif

#endif
