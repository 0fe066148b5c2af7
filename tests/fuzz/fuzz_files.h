/*
 * Helpers shared by the fuzz targets that read files (the epoch file,
 * pg_control, configuration files): one private directory per process,
 * made at first use under /dev/shm (or /tmp), and a function that writes an
 * input into a file there. The directory is left for the OS to clean (the
 * process may stop at any input); its files are overwritten per input.
 */
#ifndef MERIDIAN_FUZZ_FILES_H
#define MERIDIAN_FUZZ_FILES_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *fuzz_dir(void)
{
    static char dir[64];
    if (dir[0])
        return dir;
    snprintf(dir, sizeof(dir), "/dev/shm/mrd-fuzz-XXXXXX");
    if (!mkdtemp(dir)) {
        snprintf(dir, sizeof(dir), "/tmp/mrd-fuzz-XXXXXX");
        if (!mkdtemp(dir))
            abort();
    }
    return dir;
}

/* Writes data to <fuzz_dir>/<rel> (creating one level of directory in rel
 * if needed); returns the path in a static buffer. Aborts on I/O errors. */
static const char *fuzz_write(const char *rel, const uint8_t *data, size_t size)
{
    static char path[256];
    snprintf(path, sizeof(path), "%s/%s", fuzz_dir(), rel);
    char *slash = strrchr(path, '/');
    if (slash && slash > path + strlen(fuzz_dir())) {
        *slash = '\0';
        mkdir(path, 0700);
        *slash = '/';
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        abort();
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(fd, data + off, size - off);
        if (n <= 0)
            abort();
        off += (size_t)n;
    }
    close(fd);
    return path;
}

#endif
