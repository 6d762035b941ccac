/* Temporal shift of a contiguous (N, T, C, H, W) tensor in one pass over the output.
 *
 * Every (n, t, c) plane of H*W elements is a "row" of `row_bytes` bytes. With direction +1,
 * channels [0, fold) take frame t+1 and channels [fold, 2*fold) frame t-1 (direction -1 swaps the
 * two: the adjoint, used for gradients); the other channels are copied; a row with no source frame
 * is zeroed (all-zero bytes are 0 in every floating and integer dtype). Each output byte is written
 * once, so the result is bit-identical to the slice-copy formula.
 *
 * The threads split the output into equal row ranges; each copies the runs of rows that share a
 * source (inside one frame: the two shifted folds and the rest) in memcpy's of at most CHUNK_BYTES:
 * a single memcpy of a multi-megabyte run takes glibc's streaming-store path, which lost to clone()
 * on the benchmark. Built and loaded by ops/native_shift.py; OpenMP shares torch's libgomp. */
#include <stddef.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef CHUNK_BYTES
#define CHUNK_BYTES (64L << 10)
#endif

void lsnet_temporal_shift(const char *src, char *dst, long clips, long segments, long channels,
                          long row_bytes, long fold, int direction, int threads)
{
    long rows = clips * segments * channels;
    long chunk_rows = CHUNK_BYTES / row_bytes > 1 ? CHUNK_BYTES / row_bytes : 1;
#pragma omp parallel num_threads(threads)
    {
        long id = 0, nth = 1;
#ifdef _OPENMP
        id = omp_get_thread_num();
        nth = omp_get_num_threads();
#endif
        long r = rows * id / nth, stop = rows * (id + 1) / nth;
        while (r < stop) {
            long c = r % channels, t = (r / channels) % segments, last, step;
            if (c < fold) {
                step = direction > 0 ? 1 : -1;
                last = fold;
            } else if (c < 2 * fold) {
                step = direction > 0 ? -1 : 1;
                last = 2 * fold;
            } else {
                step = 0;
                last = channels;
            }
            long end = r + (last - c) < stop ? r + (last - c) : stop;
            if (end - r > chunk_rows)
                end = r + chunk_rows;
            size_t bytes = (size_t)((end - r) * row_bytes);
            if (t + step < 0 || t + step >= segments)
                memset(dst + r * row_bytes, 0, bytes);
            else
                memcpy(dst + r * row_bytes, src + (r + step * channels) * row_bytes, bytes);
            r = end;
        }
    }
}
