/*
 * store_torn.c - the built-in store through the C API, with a torn last record.
 *
 * Three QoS 1 messages are accepted offline with mqtt_client_set_persistence,
 * then the client is freed (as a crash would lose it). The log is then cut at
 * every byte offset inside its last record, and once has a byte of that
 * record flipped; each time a new client on the same store must load exactly
 * the first two messages: connected to the broker, it gets the PUBACKs of
 * their mids and no other. Run under valgrind and ASan by c_programs.rs.
 *
 * Usage: store_torn HOST PORT
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mqtt.h>

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "store_torn.c:%d: check failed: %s\n", __LINE__, #cond);       \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static int acked[4];
static int mids[3];
static int other_acks;

static void on_puback(mqtt_client *c, const mqtt_data *d, void *ud)
{
    (void)c;
    (void)ud;
    for (int i = 0; i < 3; i++)
        if (d->mid == mids[i]) {
            acked[i]++;
            return;
        }
    other_acks++;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static unsigned char *read_file(const char *path, long *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    *len = file_size(path);
    if (!f || *len <= 0)
        return NULL;
    buf = malloc((size_t)*len);
    if (buf && fread(buf, 1, (size_t)*len, f) != (size_t)*len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static void write_file(const char *path, const unsigned char *data, long len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(data, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
}

/* A new life on the store: connect, and wait for the PUBACKs of the first
 * two messages; the third must not come. */
static void check_life(const char *dir, const char *id, const char *host, int port, const char *what)
{
    mqtt_client *c = mqtt_client_new(id, false);
    CHECK(c != NULL);
    memset(acked, 0, sizeof acked);
    other_acks = 0;
    CHECK(mqtt_client_on(c, MQTT_PUBACK, on_puback, NULL, 0, NULL) == MQTT_OK);
    CHECK(mqtt_client_set_persistence(c, dir, MQTT_SYNC_NONE) == MQTT_OK);
    CHECK(mqtt_client_connect(c, host, 30, (uint16_t)port) >= 0);
    for (int turn = 0; turn < 500 && !(acked[0] && acked[1]); turn++)
        mqtt_client_loop(c, 10);
    /* The three would have gone out in one write after the CONNACK. */
    mqtt_client_loop(c, 5);
    if (acked[0] != 1 || acked[1] != 1 || acked[2] != 0 || other_acks != 0) {
        fprintf(stderr, "%s: PUBACKs %d %d %d, others %d\n", what, acked[0], acked[1], acked[2],
                other_acks);
        exit(1);
    }
    mqtt_client_disconnect(c);
    mqtt_client_free(c);
}

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : "localhost";
    int port = argc > 2 ? atoi(argv[2]) : 1883;
    char dir[] = "/tmp/store_torn.XXXXXX";
    char id[64], log[128], lock[128];
    long sizes[3], full_len;
    unsigned char *full;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(id, sizeof id, "store-torn-%ld", (long)getpid());
    snprintf(log, sizeof log, "%s/%s.log", dir, id);
    snprintf(lock, sizeof lock, "%s/%s.lock", dir, id);

    mqtt_client *c = mqtt_client_new(id, false);
    CHECK(c != NULL);
    CHECK(mqtt_client_set_persistence(c, dir, MQTT_SYNC_NONE) == MQTT_OK);
    /* A second client on the same store is refused while this one lives. */
    mqtt_client *other = mqtt_client_new(id, false);
    CHECK(other != NULL);
    CHECK(mqtt_client_set_persistence(other, dir, MQTT_SYNC_NONE) == MQTT_ERR_STORE_LOCKED);
    mqtt_client_free(other);
    CHECK(mqtt_client_set_persistence(c, dir, 3) == MQTT_ERR_INVALID_ARGUMENT);
    for (int i = 0; i < 3; i++) {
        char payload[16];
        int n = snprintf(payload, sizeof payload, "message %d", i);
        mids[i] = mqtt_client_publish(c, "store/torn", payload, (size_t)n, 1, false);
        CHECK(mids[i] > 0);
    }
    mqtt_client_free(c);

    /* A closed log ends with its last record. Each publish wrote one record
     * (magic "MQTTLOG\x01", then len u32 LE, crc u32, body of len bytes):
     * sizes[i] is where the record of message i ends. */
    full = read_file(log, &full_len);
    CHECK(full != NULL && full_len > 8);
    {
        long pos = 8;
        int records = 0;
        while (pos + 8 <= full_len && records < 3) {
            long body = (long)full[pos] | (long)full[pos + 1] << 8 | (long)full[pos + 2] << 16 |
                        (long)full[pos + 3] << 24;
            pos += 8 + body;
            sizes[records++] = pos;
        }
        CHECK(records == 3 && pos == full_len);
    }
    /* The last record is [sizes[1], sizes[2]): cut inside it at every offset. */
    for (long cut = sizes[1]; cut < sizes[2]; cut++) {
        char what[48];
        snprintf(what, sizeof what, "cut at %ld", cut);
        write_file(log, full, cut);
        check_life(dir, id, host, port, what);
    }
    /* A flipped byte in the last record's payload. */
    full[sizes[2] - 2] ^= 0x40;
    write_file(log, full, full_len);
    check_life(dir, id, host, port, "flipped byte");
    printf("store_torn: %ld cuts and a flipped byte, each loading the 2 complete records\n",
           sizes[2] - sizes[1]);

    free(full);
    unlink(log);
    unlink(lock);
    {
        char tmp[160];
        snprintf(tmp, sizeof tmp, "%s.tmp", log);
        unlink(tmp);
    }
    CHECK(rmdir(dir) == 0);
    return 0;
}
