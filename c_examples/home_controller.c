/*
 * home_controller.c - the heating controller of the seed's home-heating scenario.
 *
 * It subscribes to home/+ and decides the heating of each room with the seed's callback
 * system: for every reading at most one *specific* callback runs (the highest priority
 * one whose condition is true), and the *generic* callback runs only when none matched.
 *
 *   priority 20  home/_stop                  -> stop the controller
 *   priority 10  any room below 5.0C (frost) -> heating ON at full power
 *   priority  0  one callback per room type  -> heating ON below the type's target
 *                (living spaces 20C, bathroom 22C, kitchen 18C, utility rooms 10C)
 *   generic      anything else               -> unknown room / bad reading, unchanged
 *
 * It prints "controller: ready" once subscribed, then one decision per reading, e.g.
 *     controller: kitchen 17.5C -> heating ON (kitchen, target 18.0C)
 * and exits 0 after `readings` readings, or on a message on home/_stop when readings is 0.
 * It gives up (exit 1) after 60 seconds.
 *
 * Usage: home_controller [host] [port] [readings]    (defaults: localhost 1883 0)
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

/* ---- state shared with the loop thread --------------------------------------------- */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int n_suback, n_readings, n_stop, n_disconnect;
static long max_readings; /* 0 = until home/_stop */

static void bump(int *counter)
{
    pthread_mutex_lock(&lock);
    (*counter)++;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

static void deadline_in(struct timespec *deadline, int timeout_ms)
{
    clock_gettime(CLOCK_REALTIME, deadline);
    deadline->tv_sec += timeout_ms / 1000;
    deadline->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline->tv_nsec >= 1000000000L) {
        deadline->tv_sec++;
        deadline->tv_nsec -= 1000000000L;
    }
}

static int wait_for(const int *counter, int target, int timeout_ms)
{
    struct timespec deadline;
    int ok;

    deadline_in(&deadline, timeout_ms);
    pthread_mutex_lock(&lock);
    while (*counter < target)
        if (pthread_cond_timedwait(&changed, &lock, &deadline) == ETIMEDOUT)
            break;
    ok = *counter >= target;
    pthread_mutex_unlock(&lock);
    return ok;
}

/* Wait for home/_stop, or for max_readings readings when it is not 0. */
static int wait_until_done(int timeout_ms)
{
    struct timespec deadline;
    int done;

    deadline_in(&deadline, timeout_ms);
    pthread_mutex_lock(&lock);
    for (;;) {
        done = n_stop > 0 || (max_readings > 0 && n_readings >= max_readings);
        if (done || pthread_cond_timedwait(&changed, &lock, &deadline) == ETIMEDOUT)
            break;
    }
    done = n_stop > 0 || (max_readings > 0 && n_readings >= max_readings);
    pthread_mutex_unlock(&lock);
    return done;
}

/* ---- reading a message ------------------------------------------------------------- */

struct reading {
    const char *room; /* points into the topic: valid during the callback only */
    double celsius;
};

/* A reading is a message on home/<room> whose payload is a number. */
static int parse_reading(const mqtt_data *data, struct reading *out)
{
    char buf[32], *end;
    const mqtt_message *m = data->message;

    if (m == NULL || strncmp(m->topic, "home/", 5) != 0 || m->payload_len == 0 ||
        m->payload_len >= sizeof buf)
        return 0;
    memcpy(buf, m->payload, m->payload_len);
    buf[m->payload_len] = '\0';
    out->room = m->topic + 5;
    out->celsius = strtod(buf, &end);
    return end != buf && *end == '\0';
}

/* ---- rules: conditions and callbacks ----------------------------------------------- */

static bool is_stop(const mqtt_data *data, void *user_data)
{
    (void)user_data;
    return data->message != NULL && strcmp(data->message->topic, "home/_stop") == 0;
}

static void stop(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    (void)user_data;
    printf("controller: home/_stop received\n");
    bump(&n_stop);
}

#define FROST_CELSIUS 5.0

static bool is_frost(const mqtt_data *data, void *user_data)
{
    struct reading r;
    (void)user_data;
    return parse_reading(data, &r) && r.celsius < FROST_CELSIUS;
}

static void frost(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct reading r;
    (void)client;
    (void)user_data;
    if (!parse_reading(data, &r)) /* the condition checked it; never taken */
        return;
    printf("controller: %s %.1fC -> heating ON at full power (frost below %.1fC)\n", r.room,
           r.celsius, FROST_CELSIUS);
    bump(&n_readings);
}

struct room_type {
    const char *name;
    double target;
    const char *rooms[4]; /* NULL-terminated */
};

static const struct room_type room_types[] = {
    {"living space", 20.0, {"livingroom", "bedroom", NULL, NULL}},
    {"bathroom", 22.0, {"bathroom", NULL, NULL, NULL}},
    {"kitchen", 18.0, {"kitchen", NULL, NULL, NULL}},
    {"utility room", 10.0, {"garage", "cellar", NULL, NULL}},
};

static bool is_room_of_type(const mqtt_data *data, void *user_data)
{
    const struct room_type *type = (const struct room_type *)user_data;
    struct reading r;
    size_t i;

    if (!parse_reading(data, &r))
        return false;
    for (i = 0; type->rooms[i] != NULL; i++)
        if (strcmp(type->rooms[i], r.room) == 0)
            return true;
    return false;
}

static void regulate(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    const struct room_type *type = (const struct room_type *)user_data;
    struct reading r;
    (void)client;

    if (!parse_reading(data, &r)) /* the condition checked it; never taken */
        return;
    printf("controller: %s %.1fC -> heating %s (%s, target %.1fC)\n", r.room, r.celsius,
           r.celsius < type->target ? "ON" : "OFF", type->name, type->target);
    bump(&n_readings);
}

static void fallback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct reading r;
    (void)client;
    (void)user_data;

    if (data->message == NULL)
        return; /* QoS 2 PUBLISH: its message comes with PUBREL (we subscribe with QoS 1) */
    if (parse_reading(data, &r))
        printf("controller: %s %.1fC -> no rule for this room, heating unchanged\n", r.room,
               r.celsius);
    else
        printf("controller: %s: not a temperature (%zu bytes), ignored\n", data->message->topic,
               data->message->payload_len);
    bump(&n_readings);
}

/* ---- connection events ------------------------------------------------------------- */

static void on_suback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    if (data->granted_qos_len != 1 || data->granted_qos[0] == 0x80)
        fprintf(stderr, "controller: subscription refused\n");
    else
        bump(&n_suback);
}

static void on_disconnect(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    if (data->error != MQTT_OK)
        fprintf(stderr, "controller: connection lost: %s\n", mqtt_strerror(data->error));
    bump(&n_disconnect);
}

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : "localhost";
    long port = argc > 2 ? strtol(argv[2], NULL, 10) : 1883;
    const mqtt_subscription home = {"home/+", 1};
    char client_id[64];
    mqtt_client *client;
    int rc, status = 1;
    size_t i;

    setvbuf(stdout, NULL, _IOLBF, 0);
    max_readings = argc > 3 ? strtol(argv[3], NULL, 10) : 0;
    if (port <= 0 || port > 65535 || max_readings < 0) {
        fprintf(stderr, "usage: %s [host] [port] [readings]\n", argv[0]);
        return 2;
    }

    snprintf(client_id, sizeof client_id, "home-controller-%ld", (long)getpid());
    client = mqtt_client_new(client_id, true);
    if (client == NULL) {
        fprintf(stderr, "controller: mqtt_client_new failed\n");
        return 1;
    }
    mqtt_client_set_connect_timeout(client, 5000);

    /* the rules, registered before connecting so no message can miss them */
    rc = mqtt_client_on(client, MQTT_PUBLISH, stop, is_stop, 20, NULL);
    if (rc >= 0)
        rc = mqtt_client_on(client, MQTT_PUBLISH, frost, is_frost, 10, NULL);
    for (i = 0; rc >= 0 && i < sizeof room_types / sizeof room_types[0]; i++)
        rc = mqtt_client_on(client, MQTT_PUBLISH, regulate, is_room_of_type, 0,
                            (void *)&room_types[i]);
    if (rc >= 0)
        rc = mqtt_client_on(client, MQTT_PUBLISH, fallback, NULL, 0, NULL);
    if (rc >= 0)
        rc = mqtt_client_on(client, MQTT_SUBACK, on_suback, NULL, 0, NULL);
    if (rc >= 0)
        rc = mqtt_client_on(client, MQTT_DISCONNECT, on_disconnect, NULL, 0, NULL);
    if (rc < 0) {
        fprintf(stderr, "controller: mqtt_client_on: %s\n", mqtt_strerror(rc));
        goto out;
    }

    rc = mqtt_client_connect(client, host, 30, (uint16_t)port);
    if (rc != MQTT_OK) {
        fprintf(stderr, "controller: connect to %s:%ld: %s\n", host, port, mqtt_strerror(rc));
        goto out;
    }
    rc = mqtt_client_loop_start(client, NULL, NULL);
    if (rc != MQTT_OK) {
        fprintf(stderr, "controller: loop_start: %s\n", mqtt_strerror(rc));
        goto out;
    }
    rc = mqtt_client_subscribe(client, &home, 1);
    if (rc < 0 || !wait_for(&n_suback, 1, 10000)) {
        fprintf(stderr, "controller: subscribe failed: %s\n",
                rc < 0 ? mqtt_strerror(rc) : "no SUBACK");
        goto out;
    }
    if (max_readings > 0)
        printf("controller: ready (subscribed to home/+, stopping after %ld readings)\n",
               max_readings);
    else
        printf("controller: ready (subscribed to home/+, stopping on home/_stop)\n");

    if (!wait_until_done(60000)) {
        fprintf(stderr, "controller: timed out\n");
        goto out;
    }
    pthread_mutex_lock(&lock);
    printf("controller: done after %d readings\n", n_readings);
    pthread_mutex_unlock(&lock);
    status = 0;

    mqtt_client_disconnect(client);
    wait_for(&n_disconnect, 1, 5000);
out:
    mqtt_client_free(client);
    return status;
}
