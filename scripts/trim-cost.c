/* What a malloc_trim costs: two threads each allocate N blocks of the
 * sizes a queue holds (one body of 2 KiB in ten, the rest small nodes),
 * free every other one (a fragmented heap, as a drained backlog leaves
 * it), and the main thread times malloc_trim(0), which walks each arena
 * with its lock held. Built and run by scripts/trim-cost.sh. */
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long n;
static void **blocks[2];

static void *fill(void *arg) {
    void **b = blocks[(long)arg];
    for (long i = 0; i < n; i++) {
        b[i] = malloc(i % 10 == 0 ? 2048 : 24 + (i % 7) * 16);
        ((char *)b[i])[0] = 1;
    }
    for (long i = 0; i < n; i += 2) {
        free(b[i]);
        b[i] = NULL;
    }
    return NULL;
}

static double ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    n = argc > 1 ? atol(argv[1]) : 1000000;
    pthread_t t[2];
    for (long k = 0; k < 2; k++) {
        blocks[k] = calloc(n, sizeof(void *));
        pthread_create(&t[k], NULL, fill, (void *)k);
    }
    for (int k = 0; k < 2; k++)
        pthread_join(t[k], NULL);
    struct mallinfo2 m = mallinfo2();
    double a = ms();
    malloc_trim(0);
    double b = ms();
    malloc_trim(0);
    double c = ms();
    printf("%ld blocks live, %ld freed, heap %.0f MiB: first trim %.2f ms, second %.2f ms\n",
           n, n, (m.arena + m.hblkhd) / 1048576.0, b - a, c - b);
    return 0;
}
