// The reference of bench/residency.mjs: the same scan through a plain mmap of the local file (the
// kernel's own faults from its page cache), and how much of the file is in the page cache.
//
//   residency-scan cached FILE   one JSON line: {"pages": N, "cached": M} (mincore of a mapping never touched)
//   residency-scan scan FILE     a line {"address": "HEX"} (the parent samples that mapping's Rss in
//                                /proc/PID/smaps), then one byte per page read in order and checked,
//                                timed with CLOCK_MONOTONIC, then one JSON line of results
//
// The byte of page i is residency_byte(i), as in bench/residency.mjs. The peak RSS is VmHWM after it
// was reset (5 > /proc/self/clear_refs) just before the scan; the growth is VmHWM - VmRSS before.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static unsigned char residency_byte(uint64_t page) { return (unsigned char)(1 + (page * 7 + 3) % 255); }

static long status_kib(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long value = -1;
  size_t n = strlen(key);
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, n) == 0 && line[n] == ':') {
      value = strtol(line + n + 1, NULL, 10);
      break;
    }
  }
  fclose(f);
  return value;
}

static long region_rss_kib(void *address) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (!f) return -1;
  char line[512], start[32];
  snprintf(start, sizeof start, "%lx-", (unsigned long)address);
  int in = 0;
  long value = -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, start, strlen(start)) == 0) in = 1;
    else if (in && strncmp(line, "Rss:", 4) == 0) {
      value = strtol(line + 4, NULL, 10);
      break;
    }
  }
  fclose(f);
  return value;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  if (argc != 3 || (strcmp(argv[1], "cached") && strcmp(argv[1], "scan"))) {
    fprintf(stderr, "usage: %s cached|scan FILE\n", argv[0]);
    return 2;
  }
  int fd = open(argv[2], O_RDONLY);
  if (fd < 0) {
    perror(argv[2]);
    return 1;
  }
  struct stat st;
  if (fstat(fd, &st) < 0) {
    perror("fstat");
    return 1;
  }
  size_t size = (size_t)st.st_size, pages = size / PAGE;
  volatile unsigned char *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  if (strcmp(argv[1], "cached") == 0) {
    unsigned char *vec = malloc(pages);
    if (!vec || mincore((void *)map, size, vec) < 0) {
      perror("mincore");
      return 1;
    }
    size_t cached = 0;
    for (size_t i = 0; i < pages; i++) cached += vec[i] & 1;
    printf("{\"pages\": %zu, \"cached\": %zu}\n", pages, cached);
    return 0;
  }
  printf("{\"address\": \"%lx\"}\n", (unsigned long)map);
  fflush(stdout);
  int clear = open("/proc/self/clear_refs", O_WRONLY);
  int reset = clear >= 0 && write(clear, "5", 1) == 1;
  if (clear >= 0) close(clear);
  long rss_before = status_kib("VmRSS");
  long bad = 0;
  double t0 = now_ms();
  for (size_t i = 0; i < pages; i++)
    if (map[i * PAGE] != residency_byte(i)) bad++;
  double ms = now_ms() - t0;
  long hwm = status_kib("VmHWM");
  long region = region_rss_kib((void *)map);
  printf("{\"ms\": %.3f, \"bad\": %ld, \"rssBeforeKiB\": %ld, \"hwmKiB\": %ld, \"hwmReset\": %s, \"regionRssEndKiB\": %ld}\n", ms, bad,
         rss_before, hwm, reset ? "true" : "false", region);
  munmap((void *)map, size);
  close(fd);
  return 0;
}
