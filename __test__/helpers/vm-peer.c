/*
 * A stand-in for a Firecracker being restored: it maps guest memory in one or more regions,
 * creates a userfaultfd with EVENT_REMOVE (as Firecracker does for its balloon), registers the
 * memory, sends the fd with the body current Firecracker sends (page_size and page_size_kib, both
 * in bytes; see __test__/fixtures/firecracker-handshakes.json), then reads every page and checks
 * every byte against the file it is told holds the memory's contents.
 *
 *   vm-peer SOCKET EXPECTED PAGES [options]
 *   EXPECTED   a file with what the memory must read as (region i starts at i * PAGES * page)
 *   PAGES      pages per region
 *   --regions N      regions (default 1), each at its own address
 *   --huge           2 MiB pages of hugetlbfs instead of 4 KiB pages
 *   --delay-ms N     wait N ms after the handshake before touching memory (vCPUs start later)
 *   --balloon P:N    after the check, drop N pages from page P of region 0 (MADV_DONTNEED, as a
 *                    balloon does), read them again, and check that they read as zeros
 *   --hang-after N   read N pages, then wait to be killed
 *   --order FILE     touch pages in the order listed in FILE (page numbers of region 0), then the rest
 *   --bad-body       send a body that is not JSON, then wait, as Firecracker waits for its handler
 *   --half-body      send the first half of the body (with the fd), then wait
 *   --send-pipe      send a pipe in place of the userfaultfd (which it keeps), then touch memory
 *   --connect-from-child  a child process connects (the socket's SO_PEERCRED and pidfd are the
 *                    child's) and exits; once it is reaped, this process sends the handshake on
 *                    that socket and goes on
 *   --send-delay-ms N connect, print {"connected":true}, wait N ms, then send the handshake
 *   --unmap P:N      after the handshake, unmap N pages from page P of region 0 (part of a registered
 *                    range gone; no EVENT_UNMAP tells the server, as with Firecracker), and skip them
 *   --pace-ms N      sleep N ms after each page it reads (a VM that runs on while its handler is
 *                    restarted); the output's max_gap_ms is the longest wait for one page
 *   --exit-when-present P  touch nothing: wait until page P of region 0 is present (mapped by the
 *                    server's prefetch; mincore), then print {"exiting":true} and exit 0 at once
 * Prints one JSON line: {"pages":..,"wrong":..,"balloon_wrong":..}; exits 0 if nothing was wrong.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_REGIONS 16384

#include "send-fd.h"

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Compares one page of guest memory with what EXPECTED holds there; returns wrong bytes. */
static size_t check_page(int expected, const unsigned char *page, size_t size, off_t at, unsigned char *scratch) {
  ssize_t got = pread(expected, scratch, size, at);
  if (got < 0) die("pread");
  memset(scratch + got, 0, size - (size_t)got);
  size_t wrong = 0;
  for (size_t i = 0; i < size; i++) wrong += page[i] != scratch[i];
  return wrong;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: vm-peer SOCKET EXPECTED PAGES [--regions N] [--huge] [--delay-ms N] [--balloon P:N] [--hang-after N] [--order FILE]\n");
    return 2;
  }
  size_t pages = strtoul(argv[3], NULL, 10);
  int regions = 1, huge = 0;
  long delay_ms = 0, hang_after = -1;
  size_t balloon_at = 0, balloon_pages = 0, unmap_at = 0, unmap_pages = 0;
  long exit_when_present = -1;
  const char *order = NULL;
  int bad_body = 0, half_body = 0, send_pipe = 0, connect_from_child = 0;
  long send_delay_ms = 0, pace_ms = 0;
  for (int i = 4; i < argc; i++) {
    if (strcmp(argv[i], "--regions") == 0 && i + 1 < argc) regions = atoi(argv[++i]);
    else if (strcmp(argv[i], "--huge") == 0) huge = 1;
    else if (strcmp(argv[i], "--delay-ms") == 0 && i + 1 < argc) delay_ms = atol(argv[++i]);
    else if (strcmp(argv[i], "--hang-after") == 0 && i + 1 < argc) hang_after = atol(argv[++i]);
    else if (strcmp(argv[i], "--order") == 0 && i + 1 < argc) order = argv[++i];
    else if (strcmp(argv[i], "--bad-body") == 0) bad_body = 1;
    else if (strcmp(argv[i], "--half-body") == 0) half_body = 1;
    else if (strcmp(argv[i], "--send-pipe") == 0) send_pipe = 1;
    else if (strcmp(argv[i], "--connect-from-child") == 0) connect_from_child = 1;
    else if (strcmp(argv[i], "--send-delay-ms") == 0 && i + 1 < argc) send_delay_ms = atol(argv[++i]);
    else if (strcmp(argv[i], "--exit-when-present") == 0 && i + 1 < argc) exit_when_present = atol(argv[++i]);
    else if (strcmp(argv[i], "--pace-ms") == 0 && i + 1 < argc) pace_ms = atol(argv[++i]);
    else if (strcmp(argv[i], "--unmap") == 0 && i + 1 < argc) {
      if (sscanf(argv[++i], "%zu:%zu", &unmap_at, &unmap_pages) != 2) die("--unmap P:N");
    } else if (strcmp(argv[i], "--balloon") == 0 && i + 1 < argc) {
      if (sscanf(argv[++i], "%zu:%zu", &balloon_at, &balloon_pages) != 2) die("--balloon P:N");
    } else {
      fprintf(stderr, "vm-peer: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (regions < 1 || regions > MAX_REGIONS) die("--regions");
  int expected = open(argv[2], O_RDONLY | O_CLOEXEC);
  if (expected < 0) die("open EXPECTED");
  size_t page = huge ? (2UL << 20) : 4096;
  size_t size = pages * page;

  int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (uffd < 0) die("userfaultfd");
  struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE};
  if (ioctl(uffd, UFFDIO_API, &api) < 0) die("UFFDIO_API");

  unsigned char **mem = calloc((size_t)regions, sizeof *mem);
  size_t body_size = 4096 + (size_t)regions * 160;
  char *body = malloc(body_size);
  if (!mem || !body) die("malloc");
  int at = snprintf(body, body_size, "[");
  for (int r = 0; r < regions; r++) {
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | (huge ? MAP_HUGETLB : 0);
    mem[r] = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (mem[r] == MAP_FAILED) die("mmap");
    struct uffdio_register reg = {.range = {.start = (uintptr_t)mem[r], .len = size}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) die("UFFDIO_REGISTER");
    at += snprintf(body + at, body_size - at,
                   "%s{\"base_host_virt_addr\":%lu,\"size\":%zu,\"offset\":%zu,\"page_size\":%zu,\"page_size_kib\":%zu}",
                   r ? "," : "", (unsigned long)(uintptr_t)mem[r], size, (size_t)r * size, page, page);
  }
  snprintf(body + at, body_size - at, "]");
  if (bad_body) snprintf(body, body_size, "[{\"base_host_virt_addr\": oops");
  if (half_body) body[strlen(body) / 2] = 0;
  int sent = uffd;
  if (send_pipe) {
    int ends[2];
    if (pipe(ends) < 0) die("pipe");
    sent = ends[0];
  }
  int sock = -1;
  if (connect_from_child) {
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0) die("socket");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
      struct sockaddr_un addr = {.sun_family = AF_UNIX};
      strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
      if (connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
      _exit(0);
    }
    if (waitpid(child, NULL, 0) < 0) die("waitpid");
    printf("{\"child\":%d}\n", (int)child);
    fflush(stdout);
  } else {
    sock = connect_to(argv[1]);
  }
  if (send_delay_ms > 0) {
    printf("{\"connected\":true}\n");
    fflush(stdout);
    struct timespec wait = {.tv_sec = send_delay_ms / 1000, .tv_nsec = (send_delay_ms % 1000) * 1000000L};
    nanosleep(&wait, NULL);
  }
  send_handshake_fd(sock, body, sent);
  if (bad_body || half_body)
    for (;;) pause();
  if (delay_ms > 0) {
    struct timespec pause = {.tv_sec = delay_ms / 1000, .tv_nsec = (delay_ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
  }

  if (exit_when_present >= 0) {
    if ((size_t)exit_when_present >= pages) die("--exit-when-present past the region");
    unsigned char present = 0;
    struct timespec poll = {.tv_sec = 0, .tv_nsec = 50000};
    for (;;) {
      if (mincore(mem[0] + (size_t)exit_when_present * page, page, &present) < 0) die("mincore");
      if (present & 1) break;
      nanosleep(&poll, NULL);
    }
    printf("{\"exiting\":true}\n");
    fflush(stdout);
    _exit(0);
  }

  /* Touch pages in the order given (region 0), then every page, checking each byte. */
  unsigned char *scratch = malloc(page);
  unsigned char *touched = calloc((size_t)regions * pages, 1);
  if (!scratch || !touched) die("malloc");
  if (unmap_pages > 0) {
    if (unmap_at + unmap_pages > pages) die("--unmap past the region");
    if (munmap(mem[0] + unmap_at * page, unmap_pages * page) < 0) die("munmap");
    memset(touched + unmap_at, 1, unmap_pages);
  }
  size_t wrong = 0, read = 0;
  double max_gap_ms = 0;
  if (order) {
    FILE *list = fopen(order, "r");
    if (!list) die("open ORDER");
    size_t p;
    while (fscanf(list, "%zu", &p) == 1) {
      if (p >= pages || touched[p]) continue;
      touched[p] = 1;
      wrong += check_page(expected, mem[0] + p * page, page, (off_t)(p * page), scratch);
      read++;
    }
    fclose(list);
  }
  for (int r = 0; r < regions; r++) {
    for (size_t p = 0; p < pages; p++) {
      if (touched[(size_t)r * pages + p]) continue;
      if (hang_after >= 0 && read == (size_t)hang_after) {
        printf("{\"hanging\":true,\"pages\":%zu}\n", read);
        fflush(stdout);
        for (;;) pause();
      }
      double before = now_ms();
      wrong += check_page(expected, mem[r] + p * page, page, (off_t)((size_t)r * size + p * page), scratch);
      double gap = now_ms() - before;
      if (gap > max_gap_ms) max_gap_ms = gap;
      read++;
      if (pace_ms > 0) {
        if (read == 1) {
          printf("{\"running\":true}\n");
          fflush(stdout);
        }
        struct timespec pause_for = {pace_ms / 1000, (pace_ms % 1000) * 1000000L};
        nanosleep(&pause_for, NULL);
      }
    }
  }
  size_t balloon_wrong = 0;
  if (balloon_pages > 0) {
    /* A balloon gives pages back: they must read as zeros after, not as the snapshot's bytes. */
    if (madvise(mem[0] + balloon_at * page, balloon_pages * page, MADV_DONTNEED) < 0) die("madvise");
    for (size_t p = balloon_at; p < balloon_at + balloon_pages; p++)
      for (size_t i = 0; i < page; i++) balloon_wrong += mem[0][p * page + i] != 0;
  }
  printf("{\"pages\":%zu,\"wrong\":%zu,\"balloon_wrong\":%zu,\"max_gap_ms\":%.3f}\n", read, wrong, balloon_wrong, max_gap_ms);
  return wrong == 0 && balloon_wrong == 0 ? 0 : 1;
}
