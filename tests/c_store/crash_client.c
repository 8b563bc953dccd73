/*
 * crash_client.c - one life of a publisher or subscriber that tests/store_crash.rs
 * SIGKILLs at random moments and starts again with the same store.
 *
 *   crash_client pub HOST PORT DIR STORE SYNC TOTAL
 *   crash_client sub HOST PORT DIR STORE SYNC TOPIC
 *
 * STORE is "log" (mqtt_client_set_persistence(DIR, SYNC)) or "sqlite"
 * (c_examples/sqlite_store.c on DIR/store.db). DIR/note is the program's own
 * durable note, one id per line, appended with write(2) (a kill cannot undo
 * it):
 * - pub: ids 0..TOTAL-1 (even: QoS 1, odd: QoS 2) on topic crash/pub, payload
 *   the id; an id is noted once publish returned its mid. A new life never
 *   publishes an id that may have got a mid without being noted (that would
 *   be a second message): see next_start.
 *   Prints "PUBLISHED" when done, then keeps running until killed.
 * - sub: a persistent QoS 2 subscription to TOPIC; each message delivered to
 *   the callback is noted there, after a line "s0" at the start of each life.
 *   Prints "SUBSCRIBED" at the first SUBACK.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mqtt.h>

typedef struct sqlite_store sqlite_store;
sqlite_store *sqlite_store_open(const char *path);
void sqlite_store_close(sqlite_store *s);
extern const mqtt_store_ops sqlite_store_ops;

static int note_fd = -1;

static void die(const char *what, int rc)
{
    fprintf(stderr, "crash_client: %s: %s\n", what, rc < 0 ? mqtt_strerror(rc) : strerror(errno));
    exit(3);
}

static void note(const char *text, size_t len)
{
    char line[64];
    if (len > sizeof line - 1)
        len = sizeof line - 1;
    memcpy(line, text, len);
    line[len] = '\n';
    if (write(note_fd, line, len + 1) != (ssize_t)(len + 1))
        die("note", 0);
}

/* Where the next life starts: two after the highest id noted, since the one
 * after it may have got a mid without being noted; a life's start is noted
 * too ("s<id>"), so that a life killed before noting anything makes its
 * successor skip that first, uncertain id as well. */
static long next_start(const char *path)
{
    FILE *f = fopen(path, "r");
    long best = -1, cur = 0;
    int have = 0, start_line = 0, ch;
    if (!f)
        return 0;
    while ((ch = fgetc(f)) != EOF) {
        if (ch == '\n') {
            long v = start_line ? cur - 1 : cur;
            if (have && v > best)
                best = v;
            cur = 0;
            have = 0;
            start_line = 0;
        } else if (ch == 's') {
            start_line = 1;
        } else if (ch >= '0' && ch <= '9') {
            cur = cur * 10 + (ch - '0');
            have = 1;
        }
    }
    fclose(f);
    return best < 0 ? 0 : best + 2;
}

static void on_message(mqtt_client *c, const mqtt_data *d, void *ud)
{
    (void)c;
    (void)ud;
    /* A PUBREL for a message delivered before (our PUBCOMP was lost) has none. */
    if (d->message)
        note((const char *)d->message->payload, d->message->payload_len);
}

static void on_suback(mqtt_client *c, const mqtt_data *d, void *ud)
{
    (void)c;
    (void)d;
    (void)ud;
    printf("SUBSCRIBED\n");
    fflush(stdout);
}

static void log_line(mqtt_client *c, int level, const char *line, void *ud)
{
    (void)c;
    (void)level;
    (void)ud;
    fprintf(stderr, "[%ld] %s\n", (long)getpid(), line);
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: crash_client pub|sub HOST PORT DIR log|sqlite SYNC TOTAL|TOPIC\n");
        return 2;
    }
    int publisher = strcmp(argv[1], "pub") == 0;
    const char *host = argv[2], *dir = argv[4];
    uint16_t port = (uint16_t)strtol(argv[3], NULL, 10);
    int sync = (int)strtol(argv[6], NULL, 10);
    char path[512];

    snprintf(path, sizeof path, "%s/note", dir);
    long start = publisher ? next_start(path) : 0;
    note_fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (note_fd < 0)
        die("open note", 0);
    {
        /* A life's start (the subscriber's too: see store_crash.rs). */
        char line[24];
        int n = snprintf(line, sizeof line, "s%ld", start);
        note(line, (size_t)n);
    }

    mqtt_client *c = mqtt_client_new(publisher ? "crash-pub" : "crash-sub", false);
    if (!c)
        die("mqtt_client_new", MQTT_ERR_INVALID_ARGUMENT);
    int rc;
    sqlite_store *db = NULL;
    if (getenv("CRASH_CLIENT_LOG"))
        mqtt_client_set_log(c, log_line, (int)strtol(getenv("CRASH_CLIENT_LOG"), NULL, 10), NULL);
    if (strcmp(argv[5], "sqlite") == 0) {
        snprintf(path, sizeof path, "%s/store.db", dir);
        /* The previous life's lock goes with its process: retry briefly. */
        for (int i = 0; i < 200 && !(db = sqlite_store_open(path)); i++)
            pause_ms(5);
        if (!db)
            die("sqlite_store_open", MQTT_ERR_STORE);
        rc = mqtt_client_set_store(c, &sqlite_store_ops, db);
    } else {
        rc = mqtt_client_set_persistence(c, dir, sync);
    }
    if (rc != MQTT_OK)
        die("store", rc);
    if (!publisher) {
        /* mosquitto may have more than the default 1000 in flight to us. */
        mqtt_client_set_max_incoming_qos2(c, 65535);
        /* Before connect: a PUBREL resent with the CONNACK is handled by
         * connect itself, and its message is delivered then or never. */
        mqtt_client_on(c, MQTT_SUBACK, on_suback, NULL, 0, NULL);
        mqtt_client_on(c, MQTT_PUBREL, on_message, NULL, 0, NULL);
    }
    while ((rc = mqtt_client_connect(c, host, 30, port)) < 0)
        pause_ms(10);
    if ((rc = mqtt_client_loop_start(c, NULL, NULL)) != MQTT_OK)
        die("loop_start", rc);

    if (publisher) {
        long total = strtol(argv[7], NULL, 10);
        for (long id = start; id < total; id++) {
            char payload[24];
            int len = snprintf(payload, sizeof payload, "%ld", id);
            while ((rc = mqtt_client_publish(c, "crash/pub", payload, (size_t)len, id % 2 ? 2 : 1,
                                             false))
                   == MQTT_ERR_QUEUE_FULL)
                pause_ms(1);
            if (rc < 0)
                die("publish", rc);
            note(payload, (size_t)len);
        }
        printf("PUBLISHED\n");
        fflush(stdout);
    } else {
        mqtt_subscription sub = {argv[7], 2};
        if ((rc = mqtt_client_subscribe(c, &sub, 1)) < 0)
            die("subscribe", rc);
    }
    for (;;)
        pause_ms(1000);
}
