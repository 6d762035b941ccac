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
 * on the benchmark.
 *
 * With `stream` set (the caller sets it when source and output together exceed the last-level
 * cache, so the output would be evicted before anyone reads it) the rows are written with SSE2
 * non-temporal stores: they go to memory without first reading each destination cache line
 * (the read-for-ownership that a plain store, clone() included, pays), a third less memory
 * traffic. Without SSE2 (not x86-64) `stream` is ignored.
 * Built and loaded by ops/native_shift.py; OpenMP shares torch's libgomp. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef CHUNK_BYTES
#define CHUNK_BYTES (64L << 10)
#endif

#if defined(__SSE2__)
/* Bytes before the first 16-byte aligned address of d (at most n). */
static size_t head_bytes(const char *d, size_t n)
{
    size_t head = (16 - ((uintptr_t)d & 15)) & 15;
    return head < n ? head : n;
}

static void stream_copy(char *d, const char *s, size_t n)
{
    size_t head = head_bytes(d, n), body, i;
    memcpy(d, s, head);
    d += head;
    s += head;
    n -= head;
    body = n & ~(size_t)63;
    for (i = 0; i < body; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
        _mm_stream_si128((__m128i *)(d + i), a);
        _mm_stream_si128((__m128i *)(d + i + 16), b);
        _mm_stream_si128((__m128i *)(d + i + 32), c);
        _mm_stream_si128((__m128i *)(d + i + 48), e);
    }
    memcpy(d + body, s + body, n - body);
}

static void stream_zero(char *d, size_t n)
{
    size_t head = head_bytes(d, n), body, i;
    __m128i z = _mm_setzero_si128();
    memset(d, 0, head);
    d += head;
    n -= head;
    body = n & ~(size_t)15;
    for (i = 0; i < body; i += 16)
        _mm_stream_si128((__m128i *)(d + i), z);
    memset(d + body, 0, n - body);
}
#endif

static void copy_row(char *d, const char *s, size_t n, int stream)
{
#if defined(__SSE2__)
    if (stream) {
        stream_copy(d, s, n);
        return;
    }
#endif
    (void)stream;
    memcpy(d, s, n);
}

static void zero_row(char *d, size_t n, int stream)
{
#if defined(__SSE2__)
    if (stream) {
        stream_zero(d, n);
        return;
    }
#endif
    (void)stream;
    memset(d, 0, n);
}

void lsnet_temporal_shift(const char *src, char *dst, long clips, long segments, long channels,
                          long row_bytes, long fold, int direction, int threads, int stream)
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
            char *out = dst + r * row_bytes;
            if (t + step < 0 || t + step >= segments)
                zero_row(out, bytes, stream);
            else
                copy_row(out, src + (r + step * channels) * row_bytes, bytes, stream);
            r = end;
        }
#if defined(__SSE2__)
        if (stream)
            _mm_sfence(); /* make the streamed rows visible before the caller reads them */
#endif
    }
}
