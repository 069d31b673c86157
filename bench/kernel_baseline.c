/* The physical limit DDC's transport is measured against: a minimal UDP pair with
 * batched sendmmsg/recvmmsg, token-bucket pacing, and nothing else (no header,
 * no checksum, no reassembly).
 *
 *   kernel_baseline send HOST PORT SIZE COUNT RATE   RATE in bytes/s, 0 = unpaced
 *   kernel_baseline recv PORT SIZE IDLE_MS           prints: DATAGRAMS BYTES SECONDS
 *
 * The receiver counts from the first datagram to the last and stops after IDLE_MS
 * without one. Compiled by bench/transport.py with the system's cc. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int send_mode(const char *host, int port, int size, long count, double rate) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int buffer = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buffer, sizeof buffer);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &to.sin_addr);
    char *payload = calloc(1, size);
    struct iovec iov[BATCH];
    struct mmsghdr messages[BATCH];
    memset(messages, 0, sizeof messages);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = payload;
        iov[i].iov_len = size;
        messages[i].msg_hdr.msg_iov = &iov[i];
        messages[i].msg_hdr.msg_iovlen = 1;
        messages[i].msg_hdr.msg_name = &to;
        messages[i].msg_hdr.msg_namelen = sizeof to;
    }
    double tokens = 0, burst = 256.0 * 1024;
    int64_t last = now_ns();
    long sent = 0;
    while (sent < count) {
        int batch = count - sent < BATCH ? (int)(count - sent) : BATCH;
        if (rate > 0) {
            while (batch * size > burst && batch > 1) batch--;
            for (;;) {
                int64_t t = now_ns();
                tokens += (t - last) * rate / 1e9;
                if (tokens > burst) tokens = burst;
                last = t;
                if (tokens >= (double)batch * size) break;
                double wait = ((double)batch * size - tokens) / rate * 1e9;
                struct timespec pause = {.tv_sec = (time_t)(wait / 1e9), .tv_nsec = (long)wait % 1000000000};
                clock_nanosleep(CLOCK_MONOTONIC, 0, &pause, NULL);
            }
            tokens -= (double)batch * size;
        }
        int done = sendmmsg(fd, messages, batch, 0);
        if (done > 0) sent += done;
    }
    return 0;
}

static int recv_mode(int port, int size, int idle_ms) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int buffer = 64 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer, sizeof buffer) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    struct sockaddr_in at = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&at, sizeof at) != 0) { perror("bind"); return 1; }
    char *buffers = malloc((size_t)BATCH * 65536);
    struct iovec iov[BATCH];
    struct mmsghdr messages[BATCH];
    long datagrams = 0;
    long long bytes = 0;
    int64_t first = 0, last = 0;
    printf("ready\n");
    fflush(stdout);
    struct pollfd waiter = {.fd = fd, .events = POLLIN};
    for (;;) {
        if (poll(&waiter, 1, datagrams ? idle_ms : 60000) <= 0) break;
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = buffers + (size_t)i * 65536;
            iov[i].iov_len = 65536;
            memset(&messages[i], 0, sizeof messages[i]);
            messages[i].msg_hdr.msg_iov = &iov[i];
            messages[i].msg_hdr.msg_iovlen = 1;
        }
        int got = recvmmsg(fd, messages, BATCH, MSG_DONTWAIT, NULL);
        if (got <= 0) continue;
        if (!first) first = now_ns();
        last = now_ns();
        datagrams += got;
        for (int i = 0; i < got; i++) bytes += messages[i].msg_len;
    }
    (void)size;
    printf("%ld %lld %.6f\n", datagrams, bytes, (last - first) / 1e9);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 7 && strcmp(argv[1], "send") == 0)
        return send_mode(argv[2], atoi(argv[3]), atoi(argv[4]), atol(argv[5]), atof(argv[6]));
    if (argc == 5 && strcmp(argv[1], "recv") == 0)
        return recv_mode(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    fprintf(stderr, "usage: %s send HOST PORT SIZE COUNT RATE | recv PORT SIZE IDLE_MS\n", argv[0]);
    return 2;
}
