/*
 * The stand-in VM of bench/service.mjs: a changed copy of __test__/helpers/vm-peer.c's core (one
 * region of 4 KiB pages, a userfaultfd with EVENT_REMOVE that it keeps after sending it, as
 * Firecracker does, and the handshake body current Firecracker sends), with timings the tests do
 * not need. Built with cc -I __test__/helpers (for send-fd.h).
 *
 *   service-peer SOCKET EXPECTED PAGES           once: connect, send the handshake, touch page 0
 *       (the first fault), then every page, checking every byte against EXPECTED; prints
 *       {"firstFaultUs":..,"pages":..,"bytes":..,"wrong":..}; exits 0 if nothing was wrong.
 *   service-peer SOCKET EXPECTED PAGES --loop US  after the handshake, touch a page every US
 *       microseconds, checking every byte, cycling through the pages; each page is dropped
 *       (MADV_DONTNEED) just before its touch, so that every touch is a missing fault the server
 *       serves from the file (so this VM has no balloon: its userfaultfd is made without
 *       EVENT_REMOVE, which would make the server serve dropped pages as zeros). Commands on stdin,
 *       one letter each, answered with one JSON line:
 *         m  the window since the last m: {"window":true,"maxGapUs":..,"touches":..,"wrong":..}
 *            (maxGapUs: the longest time between the ends of two consecutive touches)
 *         f  a full sweep now: drop every page, touch and check each one:
 *            {"sweep":true,"pages":..,"bytes":..,"wrong":..,"us":..}
 *         q  print the totals {"done":true,"touches":..,"bytes":..,"wrong":..} and exit
 *            (0 if nothing was wrong)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "send-fd.h"

#define PAGE 4096

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int expected_fd;
static unsigned char scratch[PAGE];

/* Reads page p of guest memory (the fault, if it is missing) and compares every byte with EXPECTED. */
static size_t touch_and_check(const unsigned char *mem, size_t p) {
  const volatile unsigned char *page = mem + p * PAGE;
  unsigned char first = page[0];
  ssize_t got = pread(expected_fd, scratch, PAGE, (off_t)(p * PAGE));
  if (got < 0) die("pread");
  memset(scratch + got, 0, PAGE - (size_t)got);
  size_t wrong = first != scratch[0];
  for (size_t i = 1; i < PAGE; i++) wrong += page[i] != scratch[i];
  return wrong;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: service-peer SOCKET EXPECTED PAGES [--loop US]\n");
    return 2;
  }
  size_t pages = strtoul(argv[3], NULL, 10);
  long loop_us = -1;
  for (int i = 4; i < argc; i++) {
    if (strcmp(argv[i], "--loop") == 0 && i + 1 < argc) loop_us = atol(argv[++i]);
    else {
      fprintf(stderr, "service-peer: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  expected_fd = open(argv[2], O_RDONLY | O_CLOEXEC);
  if (expected_fd < 0) die("open EXPECTED");
  size_t size = pages * PAGE;

  int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (uffd < 0) die("userfaultfd");
  /* In the loop, no EVENT_REMOVE: its MADV_DONTNEED must make the pages missing again, to be served
   * from the file, where with EVENT_REMOVE the server serves removed pages as zeros (a balloon's). */
  struct uffdio_api api = {.api = UFFD_API, .features = loop_us < 0 ? UFFD_FEATURE_EVENT_REMOVE : 0};
  if (ioctl(uffd, UFFDIO_API, &api) < 0) die("UFFDIO_API");
  unsigned char *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) die("mmap");
  struct uffdio_register reg = {.range = {.start = (uintptr_t)mem, .len = size}, .mode = UFFDIO_REGISTER_MODE_MISSING};
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) die("UFFDIO_REGISTER");
  char body[512];
  snprintf(body, sizeof body,
           "[{\"base_host_virt_addr\":%lu,\"size\":%zu,\"offset\":0,\"page_size\":%d,\"page_size_kib\":%d}]",
           (unsigned long)(uintptr_t)mem, size, PAGE, PAGE);

  /* The handshake starts at connect: a server that accepts late makes the VM wait from here. */
  uint64_t t0 = now_ns();
  int sock = connect_to(argv[1]);
  send_handshake_fd(sock, body, uffd);

  if (loop_us < 0) {
    size_t wrong = touch_and_check(mem, 0);
    uint64_t t1 = now_ns();
    for (size_t p = 1; p < pages; p++) wrong += touch_and_check(mem, p);
    printf("{\"firstFaultUs\":%.1f,\"pages\":%zu,\"bytes\":%zu,\"wrong\":%zu}\n", (double)(t1 - t0) / 1000.0, pages, size, wrong);
    return wrong == 0 ? 0 : 1;
  }

  int flags = fcntl(0, F_GETFL);
  if (flags < 0 || fcntl(0, F_SETFL, flags | O_NONBLOCK) < 0) die("fcntl stdin");
  struct timespec pace = {.tv_sec = loop_us / 1000000, .tv_nsec = (loop_us % 1000000) * 1000L};
  size_t next = 0, touches = 0, window_touches = 0;
  size_t wrong = 0, window_wrong = 0, bytes = 0;
  uint64_t last = now_ns(), max_gap = 0;
  for (;;) {
    char command = 0;
    ssize_t got = read(0, &command, 1);
    if (got == 0) command = 'q';
    else if (got < 0 && errno != EAGAIN) die("read stdin");
    if (command == 'q') {
      printf("{\"done\":true,\"touches\":%zu,\"bytes\":%zu,\"wrong\":%zu}\n", touches, bytes, wrong);
      return wrong == 0 ? 0 : 1;
    }
    if (command == 'm') {
      printf("{\"window\":true,\"maxGapUs\":%.1f,\"touches\":%zu,\"wrong\":%zu}\n", (double)max_gap / 1000.0, window_touches, window_wrong);
      fflush(stdout);
      max_gap = 0;
      window_touches = 0;
      window_wrong = 0;
    } else if (command == 'f') {
      uint64_t s0 = now_ns();
      if (madvise(mem, size, MADV_DONTNEED) < 0) die("madvise");
      size_t sweep_wrong = 0;
      for (size_t p = 0; p < pages; p++) sweep_wrong += touch_and_check(mem, p);
      wrong += sweep_wrong;
      bytes += size;
      printf("{\"sweep\":true,\"pages\":%zu,\"bytes\":%zu,\"wrong\":%zu,\"us\":%.1f}\n", pages, size, sweep_wrong, (double)(now_ns() - s0) / 1000.0);
      fflush(stdout);
      next = 0;
      last = now_ns();
      continue;
    }
    if (next == pages) next = 0;
    /* Dropped first, so that each touch is a missing fault the server must serve, whatever its
     * readahead or prefetch mapped before. */
    if (madvise(mem + next * PAGE, PAGE, MADV_DONTNEED) < 0) die("madvise");
    size_t w = touch_and_check(mem, next++);
    uint64_t t = now_ns();
    if (t - last > max_gap) max_gap = t - last;
    touches++;
    window_touches++;
    wrong += w;
    window_wrong += w;
    bytes += PAGE;
    if (loop_us > 0) nanosleep(&pace, NULL);
    last = now_ns();
  }
}
