/*
 * home_sensor.c - the temperature sensors of the seed's home-heating scenario:
 * "each temperature sensor publishes sampled data on 'home/nameOfRoom' channel and the
 * home temperature controller subscribes to all channels to achieve a smart heating."
 *
 * One program plays the sensors of several rooms: for `count` rounds it publishes a
 * reading (e.g. "17.5", degrees Celsius, QoS 1) on home/<room> for every room, waits until
 * the broker acknowledged every reading (PUBACK), then publishes "home/_stop" so that a
 * controller run without a reading limit (home_controller) stops cleanly.
 *
 * Usage: home_sensor [host] [port] [count]    (defaults: localhost 1883 3)
 *        count = number of rounds (readings per room), 1..100; 0 sends only "home/_stop".
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mqtt.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int n_acked, n_disconnect;

static void bump(int *counter)
{
    pthread_mutex_lock(&lock);
    (*counter)++;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

static int wait_for(const int *counter, int target, int timeout_ms)
{
    struct timespec deadline;
    int ok;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&lock);
    while (*counter < target)
        if (pthread_cond_timedwait(&changed, &lock, &deadline) == ETIMEDOUT)
            break;
    ok = *counter >= target;
    pthread_mutex_unlock(&lock);
    return ok;
}

static void on_puback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    (void)user_data;
    bump(&n_acked);
}

static void on_disconnect(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    (void)user_data;
    bump(&n_disconnect);
}

struct room {
    const char *name;
    double base;  /* typical temperature */
    double drift; /* change per round */
};

/* The garage freezes on the third round: the controller's frost rule handles it. */
static const struct room rooms[] = {
    {"kitchen", 19.5, -1.0},
    {"bedroom", 18.0, 1.5},
    {"bathroom", 23.0, -0.5},
    {"livingroom", 21.5, -2.0},
    {"garage", 8.0, -2.5},
    {"attic", 15.0, 0.5}, /* the controller has no rule for the attic */
};

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : "localhost";
    long port = argc > 2 ? strtol(argv[2], NULL, 10) : 1883;
    long count = argc > 3 ? strtol(argv[3], NULL, 10) : 3;
    const size_t n_rooms = sizeof rooms / sizeof rooms[0];
    char client_id[64], topic[64], payload[32];
    mqtt_client *client;
    int rc, published = 0, status = 1;
    long round;
    size_t r;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (port <= 0 || port > 65535 || count < 0 || count > 100) {
        fprintf(stderr, "usage: %s [host] [port] [count]\n", argv[0]);
        return 2;
    }

    snprintf(client_id, sizeof client_id, "home-sensor-%ld", (long)getpid());
    client = mqtt_client_new(client_id, true);
    if (client == NULL) {
        fprintf(stderr, "sensor: mqtt_client_new failed\n");
        return 1;
    }
    mqtt_client_set_connect_timeout(client, 5000);
    mqtt_client_on(client, MQTT_PUBACK, on_puback, NULL, 0, NULL);
    mqtt_client_on(client, MQTT_DISCONNECT, on_disconnect, NULL, 0, NULL);

    rc = mqtt_client_connect(client, host, 30, (uint16_t)port);
    if (rc != MQTT_OK) {
        fprintf(stderr, "sensor: connect to %s:%ld: %s\n", host, port, mqtt_strerror(rc));
        goto out;
    }
    rc = mqtt_client_loop_start(client, NULL, NULL);
    if (rc != MQTT_OK) {
        fprintf(stderr, "sensor: loop_start: %s\n", mqtt_strerror(rc));
        goto out;
    }
    printf("sensor: connected to %s:%ld, %ld round(s) of %zu rooms\n", host, port, count, n_rooms);

    for (round = 0; round < count; round++) {
        for (r = 0; r < n_rooms; r++) {
            double t = rooms[r].base + rooms[r].drift * (double)round;
            snprintf(topic, sizeof topic, "home/%s", rooms[r].name);
            snprintf(payload, sizeof payload, "%.1f", t);
            rc = mqtt_client_publish(client, topic, payload, strlen(payload), 1, false);
            if (rc < 0) {
                fprintf(stderr, "sensor: publish %s: %s\n", topic, mqtt_strerror(rc));
                goto out;
            }
            published++;
            printf("sensor: %s %sC\n", topic, payload);
        }
    }
    if (!wait_for(&n_acked, published, 10000)) {
        fprintf(stderr, "sensor: only %d of %d readings acknowledged\n", n_acked, published);
        goto out;
    }

    /* tell a controller started without a reading limit that we are done */
    rc = mqtt_client_publish(client, "home/_stop", "", 0, 1, false);
    if (rc < 0 || !wait_for(&n_acked, published + 1, 10000)) {
        fprintf(stderr, "sensor: publishing home/_stop failed\n");
        goto out;
    }
    printf("sensor: %d readings acknowledged, sent home/_stop\n", published);
    status = 0;

    mqtt_client_disconnect(client);
    wait_for(&n_disconnect, 1, 5000);
out:
    mqtt_client_free(client);
    return status;
}
