// How long a group commit's sync waits while something else writes or deletes a large
// file on the same disk: the probe behind the figures in wal/src/storage/fs.rs
// (BULK_SYNC_EVERY_BYTES, REMOVE_STEP_BYTES).
//
//   cc -O2 -o /tmp/sync_beside_bulk benches/io/sync_beside_bulk.c
//   /tmp/sync_beside_bulk DIR MODE
//
// A child process plays the log: every 0.5 ms it appends 5 KB through a shared mapping of
// a 64 MiB zero-filled file and fdatasyncs it, for 3 s, then prints the syncs' p50, p99,
// p99.9 and maximum. One second in, the parent does MODE with a 115 MB file in DIR:
//   none          nothing (the disk's own noise)
//   write-once    write it in one call, then fsync (as snapshots were written)
//   write-steps   write it 1 MiB at a time, fdatasync after each step (as they are now)
//   delete        delete it (written beforehand), then syncfs (commits the journal, and
//                 with it a `discard` mount's discards)
//   delete-steps  shorten it 8 MiB at a time with an fsync each, then delete it
// Alternate the modes over several runs: a shared virtual disk is noisy.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LOG_BYTES (64L << 20)
#define BULK_BYTES (115L << 20)
#define WRITE_STEP_BYTES (1L << 20)
#define DELETE_STEP_BYTES (8L << 20)
#define PROBE_SECONDS 3.0
#define MAX_SYNCS 100000

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void probe(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/probe-log.dat", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die("open probe log");
    static char page[4096];
    for (long at = 0; at < LOG_BYTES; at += sizeof page)
        if (write(fd, page, sizeof page) != sizeof page) die("zero the probe log");
    fsync(fd);
    char *log = mmap(NULL, LOG_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (log == MAP_FAILED) die("mmap");
    static double took[MAX_SYNCS];
    int syncs = 0;
    long at = 0;
    double start = now();
    while (now() - start < PROBE_SECONDS && syncs < MAX_SYNCS) {
        memset(log + at, 'a' + syncs % 26, 5000);
        at = (at + 5000) % (LOG_BYTES - 5000);
        double before = now();
        fdatasync(fd);
        took[syncs++] = now() - before;
        usleep(500);
    }
    qsort(took, syncs, sizeof took[0], by_value);
    printf("%d syncs: p50 %.0f us, p99 %.0f us, p99.9 %.0f us, max %.0f us\n", syncs,
           took[syncs / 2] * 1e6, took[syncs * 99 / 100] * 1e6, took[syncs * 999 / 1000] * 1e6,
           took[syncs - 1] * 1e6);
    unlink(path);
}

static void write_bulk(const char *path, int in_steps) {
    char *data = malloc(BULK_BYTES);
    if (!data) die("malloc");
    for (long i = 0; i < BULK_BYTES; i++) data[i] = (char)(i * 7 + i / 4096);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die("open bulk file");
    double start = now();
    if (!in_steps) {
        if (write(fd, data, BULK_BYTES) != BULK_BYTES) die("write");
    } else {
        for (long at = 0; at < BULK_BYTES; at += WRITE_STEP_BYTES) {
            long n = BULK_BYTES - at < WRITE_STEP_BYTES ? BULK_BYTES - at : WRITE_STEP_BYTES;
            if (pwrite(fd, data + at, n, at) != n) die("pwrite");
            fdatasync(fd);
        }
    }
    fsync(fd);
    printf("bulk write took %.0f ms\n", (now() - start) * 1e3);
    close(fd);
    free(data);
}

static void delete_bulk(const char *path, int in_steps) {
    int fd = open(path, O_RDWR);
    if (fd < 0) die("open bulk file");
    struct stat st;
    fstat(fd, &st);
    double start = now();
    if (in_steps)
        for (long len = st.st_size; len > 0;) {
            len = len > DELETE_STEP_BYTES ? len - DELETE_STEP_BYTES : 0;
            if (ftruncate(fd, len) != 0) die("ftruncate");
            fsync(fd);
        }
    unlink(path);
    syncfs(fd);
    close(fd);
    printf("delete took %.0f ms\n", (now() - start) * 1e3);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s DIR none|write-once|write-steps|delete|delete-steps\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1], *mode = argv[2];
    char bulk[4096];
    snprintf(bulk, sizeof bulk, "%s/probe-bulk.dat", dir);
    int deleting = strncmp(mode, "delete", 6) == 0;
    if (deleting) {
        write_bulk(bulk, 1);
        sync();
    }
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        probe(dir);
        return 0;
    }
    sleep(1);
    if (strcmp(mode, "write-once") == 0) write_bulk(bulk, 0);
    else if (strcmp(mode, "write-steps") == 0) write_bulk(bulk, 1);
    else if (strcmp(mode, "delete") == 0) delete_bulk(bulk, 0);
    else if (strcmp(mode, "delete-steps") == 0) delete_bulk(bulk, 1);
    else if (strcmp(mode, "none") != 0) fprintf(stderr, "unknown mode %s\n", mode);
    waitpid(child, NULL, 0);
    if (!deleting) unlink(bulk);
    return 0;
}
