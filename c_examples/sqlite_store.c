/*
 * sqlite_store.c - a durable session store on SQLite, through mqtt_store_ops.
 *
 * The library hands a store byte-string keys and values (put, remove, load
 * all, sync); this one keeps them in one table of an SQLite database:
 *
 *   sqlite_store *s = sqlite_store_open("/var/lib/app/mqtt.db");
 *   mqtt_client_set_store(client, &sqlite_store_ops, s);   before connect
 *   ...
 *   mqtt_client_free(client);
 *   sqlite_store_close(s);                                  after free
 *
 * Durability: WAL journal with synchronous=NORMAL. Each put/remove is its own
 * transaction, written to the WAL file before it returns, so a crash or kill
 * of the process loses nothing; `sync` (called by the library once per loop
 * turn, before that turn's packets are written) runs a checkpoint, which
 * fsyncs the WAL first: from then on a power loss loses nothing either.
 * locking_mode=EXCLUSIVE holds the database's lock from open to close, so a
 * second process opening the same file fails (the kernel drops the lock of a
 * process that dies).
 *
 * Build: cc app.c sqlite_store.c -lmqtt -lsqlite3 (Debian: libsqlite3-dev).
 * Compiled alone it is also a demo: `sqlite_store [host] [port]` accepts three
 * QoS 1 messages while offline, frees the client as a crash would lose it,
 * and a second client with the same id and store sends them and gets their
 * PUBACKs with the mids the first one returned. Define SQLITE_STORE_NO_MAIN to
 * use the store in another program.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mqtt.h>
#include <sqlite3.h>

typedef struct sqlite_store {
    sqlite3 *db;
    sqlite3_stmt *put, *del, *all;
} sqlite_store;

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

void sqlite_store_close(sqlite_store *s)
{
    if (!s)
        return;
    sqlite3_finalize(s->put);
    sqlite3_finalize(s->del);
    sqlite3_finalize(s->all);
    sqlite3_close(s->db);
    free(s);
}

/* NULL when the database cannot be opened, created or locked (another live
 * process has it open). */
sqlite_store *sqlite_store_open(const char *path)
{
    sqlite_store *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK
        || exec(s->db, "PRAGMA locking_mode=EXCLUSIVE") || exec(s->db, "PRAGMA journal_mode=WAL")
        || exec(s->db, "PRAGMA synchronous=NORMAL")
        /* A write takes the exclusive lock now rather than at the first put. */
        || exec(s->db, "CREATE TABLE IF NOT EXISTS mqtt_records"
                       " (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        || exec(s->db, "BEGIN IMMEDIATE") || exec(s->db, "COMMIT")
        || sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO mqtt_records (k, v) VALUES (?1, ?2)",
                              -1, &s->put, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(s->db, "DELETE FROM mqtt_records WHERE k = ?1", -1, &s->del, NULL)
               != SQLITE_OK
        || sqlite3_prepare_v2(s->db, "SELECT k, v FROM mqtt_records", -1, &s->all, NULL)
               != SQLITE_OK) {
        sqlite_store_close(s);
        return NULL;
    }
    return s;
}

/* Run a prepared statement to its end; 0 on success. */
static int run(sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int store_put(void *ctx, const uint8_t *key, size_t key_len, const uint8_t *value,
                     size_t value_len)
{
    sqlite_store *s = ctx;
    /* A zero-length blob must not be bound as NULL (the column is NOT NULL). */
    static const uint8_t empty[1] = {0};
    if (sqlite3_bind_blob64(s->put, 1, key, key_len, SQLITE_STATIC) != SQLITE_OK
        || sqlite3_bind_blob64(s->put, 2, value_len ? value : empty, value_len, SQLITE_STATIC)
               != SQLITE_OK) {
        sqlite3_reset(s->put);
        return -1;
    }
    return run(s->put);
}

static int store_remove(void *ctx, const uint8_t *key, size_t key_len)
{
    sqlite_store *s = ctx;
    if (sqlite3_bind_blob64(s->del, 1, key, key_len, SQLITE_STATIC) != SQLITE_OK) {
        sqlite3_reset(s->del);
        return -1;
    }
    return run(s->del);
}

static int store_load_all(void *ctx, mqtt_store_record_fn record, void *record_ctx)
{
    sqlite_store *s = ctx;
    int rc;
    while ((rc = sqlite3_step(s->all)) == SQLITE_ROW) {
        record(record_ctx, sqlite3_column_blob(s->all, 0), (size_t)sqlite3_column_bytes(s->all, 0),
               sqlite3_column_blob(s->all, 1), (size_t)sqlite3_column_bytes(s->all, 1));
    }
    sqlite3_reset(s->all);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int store_sync(void *ctx)
{
    sqlite_store *s = ctx;
    int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    return rc == SQLITE_OK ? 0 : -1;
}

const mqtt_store_ops sqlite_store_ops = {
    sizeof(mqtt_store_ops), store_put, store_remove, store_load_all, store_sync,
};

#ifndef SQLITE_STORE_NO_MAIN
#include <unistd.h>

static int acks;
static int expected_mids[3];

static void on_puback(mqtt_client *c, const mqtt_data *d, void *ud)
{
    (void)c;
    (void)ud;
    for (int i = 0; i < 3; i++) {
        if (expected_mids[i] == d->mid) {
            printf("PUBACK for mid %u, published by the first client\n", (unsigned)d->mid);
            expected_mids[i] = -1;
            acks++;
        }
    }
}

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : "localhost";
    long port = argc > 2 ? strtol(argv[2], NULL, 10) : 1883;
    char path[64], id[64];
    snprintf(path, sizeof path, "/tmp/sqlite_store_demo_%ld.db", (long)getpid());
    snprintf(id, sizeof id, "sqlite-store-demo-%ld", (long)getpid());
    int status = 1;

    /* First life: accepted offline, then lost (as by a crash). */
    sqlite_store *s = sqlite_store_open(path);
    mqtt_client *c = mqtt_client_new(id, false);
    if (!s || !c || mqtt_client_set_store(c, &sqlite_store_ops, s) != MQTT_OK) {
        fprintf(stderr, "cannot set up the store\n");
        goto out;
    }
    /* A second opener is refused while this one holds the database. */
    sqlite_store *other = sqlite_store_open(path);
    if (other) {
        fprintf(stderr, "a second open of the store succeeded\n");
        sqlite_store_close(other);
        goto out;
    }
    for (int i = 0; i < 3; i++) {
        char payload[16];
        int n = snprintf(payload, sizeof payload, "reading %d", i);
        expected_mids[i] = mqtt_client_publish(c, "demo/sqlite", payload, (size_t)n, 1, false);
        if (expected_mids[i] <= 0) {
            fprintf(stderr, "publish: %s\n", mqtt_strerror(expected_mids[i]));
            goto out;
        }
    }
    mqtt_client_free(c);
    sqlite_store_close(s);

    /* Second life: the same id and store; the PUBACK callback is registered
     * before connecting, as it runs for the first life's messages. */
    s = sqlite_store_open(path);
    c = mqtt_client_new(id, false);
    if (!s || !c || mqtt_client_set_store(c, &sqlite_store_ops, s) != MQTT_OK
        || mqtt_client_on(c, MQTT_PUBACK, on_puback, NULL, 0, NULL) != MQTT_OK) {
        fprintf(stderr, "cannot reopen the store\n");
        goto out;
    }
    int rc = mqtt_client_connect(c, host, 30, (uint16_t)port);
    if (rc < 0) {
        fprintf(stderr, "connect: %s\n", mqtt_strerror(rc));
        goto out;
    }
    for (int turn = 0; turn < 500 && acks < 3; turn++)
        mqtt_client_loop(c, 10);
    if (acks == 3) {
        printf("all three messages of the first client were delivered\n");
        status = 0;
    } else {
        fprintf(stderr, "only %d of 3 PUBACKs\n", acks);
    }
    mqtt_client_disconnect(c);
out:
    mqtt_client_free(c);
    sqlite_store_close(s);
    unlink(path);
    {
        char wal[80];
        snprintf(wal, sizeof wal, "%s-wal", path);
        unlink(wal);
        snprintf(wal, sizeof wal, "%s-shm", path);
        unlink(wal);
    }
    return status;
}
#endif
