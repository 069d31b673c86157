/* Pre-built datagrams for measuring a receiver alone (bench/per_side.py): capture the
 * datagrams a DatagramSender makes into a file once, then send them again in chunks, each
 * when the receiver has taken the one before, with nothing computed per datagram.
 *
 *   datagram_replay capture PORT FILE IDLE_MS   prints "ready", then at the end: DATAGRAMS BYTES
 *   datagram_replay replay FILE HOST PORT CHUNK
 *   datagram_replay drain PORT                  prints "ready", then at the end: DATAGRAMS BYTES
 *
 * The file holds each datagram as a 4-byte little-endian length and its bytes. capture
 * stops IDLE_MS after the last datagram.
 *
 * replay maps the file (in the page cache after capture) and, for every byte it reads
 * on stdin, sends the next CHUNK datagrams as fast as sendmmsg takes them (pointers into
 * the map, BATCH at a time) and answers "c", or "e" once the file is all sent. The
 * receiver thus finds a whole chunk waiting in its socket and works through it without
 * sleeping: on loopback a paced sender wakes it every few datagrams, and the wake-ups
 * would cost it more than the datagrams (the receive path of the kernel runs in the
 * sender's system call, so the sender is the slower of the two). A chunk must fit in the
 * receive buffer; nothing is lost if it does, and the receiver counts what is.
 *
 * drain is the C counterpart of such a receiver, with the least possible work: for every
 * byte on stdin it takes what the socket holds with recvmmsg until it is empty, then
 * answers "d"; at the end of stdin it prints its counts. Compiled by bench/per_side.py
 * with the system's cc. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define BATCH 64
#define LARGEST 65536

static int bound_socket(int port) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int buffer = 64 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer, sizeof buffer) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    struct sockaddr_in at = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&at, sizeof at) != 0) {
        perror("bind");
        exit(1);
    }
    return fd;
}

/* Up to BATCH datagrams into buffers (LARGEST bytes apart); returns how many, or -1 as recvmmsg does. */
static int receive_batch(int fd, char *buffers, struct iovec *iov, struct mmsghdr *messages, int flags) {
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = buffers + (size_t)i * LARGEST;
        iov[i].iov_len = LARGEST;
        memset(&messages[i], 0, sizeof messages[i]);
        messages[i].msg_hdr.msg_iov = &iov[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    return recvmmsg(fd, messages, BATCH, flags, NULL);
}

static int capture_mode(int port, const char *path, int idle_ms) {
    int fd = bound_socket(port);
    FILE *out = fopen(path, "wb");
    if (!out) { perror(path); return 1; }
    setvbuf(out, NULL, _IOFBF, 4 << 20);
    char *buffers = malloc((size_t)BATCH * LARGEST);
    struct iovec iov[BATCH];
    struct mmsghdr messages[BATCH];
    long datagrams = 0;
    long long bytes = 0;
    printf("ready\n");
    fflush(stdout);
    struct pollfd waiter = {.fd = fd, .events = POLLIN};
    for (;;) {
        if (poll(&waiter, 1, datagrams ? idle_ms : 60000) <= 0) break;
        int got = receive_batch(fd, buffers, iov, messages, MSG_DONTWAIT);
        if (got <= 0) continue;
        for (int i = 0; i < got; i++) {
            uint32_t length = messages[i].msg_len;
            unsigned char prefix[4] = {length & 0xFF, (length >> 8) & 0xFF, (length >> 16) & 0xFF, length >> 24};
            if (fwrite(prefix, 4, 1, out) != 1 || fwrite(iov[i].iov_base, length, 1, out) != 1) {
                perror(path);
                return 1;
            }
            bytes += length;
        }
        datagrams += got;
    }
    if (fclose(out) != 0) { perror(path); return 1; }
    printf("%ld %lld\n", datagrams, bytes);
    return 0;
}

static int replay_mode(const char *path, const char *host, int port, long chunk) {
    int file = open(path, O_RDONLY);
    struct stat status;
    if (file < 0 || fstat(file, &status) != 0 || status.st_size == 0) { perror(path); return 1; }
    const unsigned char *map = mmap(NULL, status.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, file, 0);
    if (map == MAP_FAILED) { perror("mmap"); return 1; }
    /* Every datagram's place in the map, found before the first one leaves. */
    long count = 0, capacity = 1 << 16;
    struct iovec *datagrams = malloc(capacity * sizeof *datagrams);
    for (off_t at = 0; at + 4 <= status.st_size;) {
        uint32_t length = map[at] | map[at + 1] << 8 | map[at + 2] << 16 | (uint32_t)map[at + 3] << 24;
        if (at + 4 + (off_t)length > status.st_size) { fprintf(stderr, "%s: truncated\n", path); return 1; }
        if (count == capacity) datagrams = realloc(datagrams, (capacity *= 2) * sizeof *datagrams);
        datagrams[count].iov_base = (void *)(map + at + 4);
        datagrams[count++].iov_len = length;
        at += 4 + length;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int buffer = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buffer, sizeof buffer);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &to.sin_addr);
    struct mmsghdr messages[BATCH];
    memset(messages, 0, sizeof messages);
    long sent = 0;
    char request;
    while (read(0, &request, 1) == 1) {
        if (sent == count) {
            if (write(1, "e", 1) != 1) return 1;
            break;
        }
        long end = sent + chunk < count ? sent + chunk : count;
        while (sent < end) {
            int batch = end - sent < BATCH ? (int)(end - sent) : BATCH;
            for (int i = 0; i < batch; i++) {
                messages[i].msg_hdr.msg_iov = &datagrams[sent + i];
                messages[i].msg_hdr.msg_iovlen = 1;
                messages[i].msg_hdr.msg_name = &to;
                messages[i].msg_hdr.msg_namelen = sizeof to;
            }
            int done = sendmmsg(fd, messages, batch, 0);
            if (done > 0) {
                sent += done;
            } else if (errno == EAGAIN || errno == ENOBUFS || errno == EINTR) {
                struct pollfd waiter = {.fd = fd, .events = POLLOUT};
                poll(&waiter, 1, 1);
            } else {
                perror("sendmmsg");
                return 1;
            }
        }
        if (write(1, "c", 1) != 1) return 1;
    }
    return 0;
}

static int drain_mode(int port) {
    int fd = bound_socket(port);
    char *buffers = malloc((size_t)BATCH * LARGEST);
    struct iovec iov[BATCH];
    struct mmsghdr messages[BATCH];
    long datagrams = 0;
    long long bytes = 0;
    printf("ready\n");
    fflush(stdout);
    char request;
    while (read(0, &request, 1) == 1) {
        int got;
        while ((got = receive_batch(fd, buffers, iov, messages, MSG_DONTWAIT)) > 0) {
            datagrams += got;
            for (int i = 0; i < got; i++) bytes += messages[i].msg_len;
        }
        if (write(1, "d", 1) != 1) return 1;
    }
    printf("%ld %lld\n", datagrams, bytes);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "capture") == 0)
        return capture_mode(atoi(argv[2]), argv[3], atoi(argv[4]));
    if (argc == 6 && strcmp(argv[1], "replay") == 0)
        return replay_mode(argv[2], argv[3], atoi(argv[4]), atol(argv[5]));
    if (argc == 3 && strcmp(argv[1], "drain") == 0)
        return drain_mode(atoi(argv[2]));
    fprintf(stderr, "usage: %s capture PORT FILE IDLE_MS | replay FILE HOST PORT CHUNK | drain PORT\n", argv[0]);
    return 2;
}
