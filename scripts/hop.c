/*
 * The thread hop of a QD1 read, in C, to compare with gqemu's (README,
 * "Known differences", speed): the caller posts a semaphore, a worker
 * thread wakes, reads 4 KiB with pread and posts a semaphore back.
 *
 *   cc -O2 -pthread scripts/hop.c -o /tmp/hop && /tmp/hop [FILE] [N]
 *
 * Prints the mean round trip in microseconds.  Run it beside
 * `gqemu bench threadpool` (its "bare thread + lock (floor)" row is the
 * same hop in Python) and `qemu-img bench -i threads -d 1 -s 4k`.
 */
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static sem_t to_worker, to_caller;
static int fd;
static char buf[4096];

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        sem_wait(&to_worker);
        if (pread(fd, buf, sizeof(buf), 0) < 0) {
            perror("pread");
            exit(1);
        }
        sem_post(&to_caller);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "/etc/passwd";
    long n = argc > 2 ? atol(argv[2]) : 20000;
    struct timespec t0, t1;
    pthread_t t;

    fd = open(path, O_RDONLY);
    if (fd < 0 || n <= 0) {
        perror(path);
        return 1;
    }
    sem_init(&to_worker, 0, 0);
    sem_init(&to_caller, 0, 0);
    pthread_create(&t, NULL, worker, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        sem_post(&to_worker);
        sem_wait(&to_caller);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("C thread hop: %.1f us per round trip\n",
           ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n / 1000.0);
    return 0;
}
