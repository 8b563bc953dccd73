/*
 * seed_example.c - the example of the original `mqtt` module documentation, in C.
 *
 *     my_client = mqtt.Client("myId", True)
 *     for retry in range(10):
 *         try:
 *             my_client.connect("test.mosquitto.org", 60)
 *             break
 *         except Exception as e:
 *             print("connecting...")
 *     my_client.subscribe([["cool/channel", 1]])
 *     my_client.on("PUBLISH", print_cool_stuff, is_cool)
 *     my_client.on("PUBLISH", print_generic_stuff)
 *     my_client.loop(on_message)
 *
 * It then publishes a few messages to itself and shows which callback got each one:
 *
 *   - is_cool/print_cool_stuff is a *specific* PUBLISH callback (it has a condition,
 *     priority 0): it gets the QoS 0/1 messages on "cool/channel";
 *   - loop_start's on_message is a specific PUBLISH callback at priority -1 whose
 *     condition is "there is a message", plus the generic PUBREL callback: it gets every
 *     other application message, QoS 2 ones when their PUBREL arrives;
 *   - print_generic_stuff, the *generic* PUBLISH callback, runs only when no condition
 *     was true: here, for the PUBLISH of a QoS 2 message, which carries no message yet
 *     (the message is held until PUBREL) - exactly the case the seed's is_cool() guards
 *     against with its `'message' in data` check.
 *
 * Usage: seed_example [host] [port]      (defaults: localhost 1883)
 * Exit status 0 when every message reached the expected callback.
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

/* ---- waiting for events coming from the loop thread -------------------------------- */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;

static int n_suback, n_cool, n_on_message, n_generic, n_disconnect;

static void bump(int *counter)
{
    pthread_mutex_lock(&lock);
    (*counter)++;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

static int get(const int *counter)
{
    int v;
    pthread_mutex_lock(&lock);
    v = *counter;
    pthread_mutex_unlock(&lock);
    return v;
}

/* Wait until *counter >= target; 0 on timeout. */
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

static void sleep_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* ---- the seed's callbacks ---------------------------------------------------------- */

static bool is_cool(const mqtt_data *data, void *user_data)
{
    (void)user_data;
    if (data->message != NULL)
        return strcmp(data->message->topic, "cool/channel") == 0;
    /* N.B. no message on the PUBLISH of a QoS 2 message (it comes with PUBREL) */
    return false;
}

static void print_cool_stuff(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    printf("  print_cool_stuff:    cool: %.*s  (topic %s, qos %d)\n",
           (int)data->message->payload_len, (const char *)data->message->payload,
           data->message->topic, data->message->qos);
    bump(&n_cool);
}

static void print_generic_stuff(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    if (data->message != NULL)
        printf("  print_generic_stuff: not cool: %.*s\n", (int)data->message->payload_len,
               (const char *)data->message->payload);
    else
        printf("  print_generic_stuff: PUBLISH mid %u without a message (QoS 2: held until PUBREL)\n",
               (unsigned)data->mid);
    bump(&n_generic);
}

static void on_message(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    printf("  on_message:          %.*s  (topic %s, qos %d, via %s)\n",
           (int)data->message->payload_len, (const char *)data->message->payload,
           data->message->topic, data->message->qos,
           data->command == MQTT_PUBREL ? "PUBREL" : "PUBLISH");
    bump(&n_on_message);
}

static void on_suback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    size_t i;
    (void)client;
    (void)user_data;
    printf("subscribed (SUBACK mid %u, granted:", (unsigned)data->mid);
    for (i = 0; i < data->granted_qos_len; i++)
        printf(" %u", (unsigned)data->granted_qos[i]);
    printf(")\n");
    bump(&n_suback);
}

static void on_disconnect(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    printf("disconnected: %s\n", mqtt_strerror(data->error));
    bump(&n_disconnect);
}

/* ---- main -------------------------------------------------------------------------- */

struct outgoing {
    const char *topic;
    const char *payload;
    int qos;
};

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : "localhost";
    long port = argc > 2 ? strtol(argv[2], NULL, 10) : 1883;
    static const struct outgoing messages[] = {
        {"cool/channel", "ice cream", 0},
        {"boring/channel", "tax forms", 0},
        {"cool/channel", "penguins", 1},
        {"boring/channel", "queueing", 1},
        {"boring/channel", "paperwork, exactly once", 2},
    };
    const size_t n_messages = sizeof messages / sizeof messages[0];
    const mqtt_subscription topics[] = {{"cool/channel", 1}, {"boring/channel", 2}};
    char client_id[64];
    mqtt_client *client;
    int rc, attempt, ok;
    size_t i;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "usage: %s [host] [port]\n", argv[0]);
        return 2;
    }
    printf("libmqtt %s, seed example against %s:%ld\n", mqtt_version(), host, port);

    snprintf(client_id, sizeof client_id, "seed-example-%ld", (long)getpid());
    client = mqtt_client_new(client_id, true);
    if (client == NULL) {
        fprintf(stderr, "mqtt_client_new failed\n");
        return 1;
    }
    mqtt_client_set_connect_timeout(client, 3000);

    /* my_client.on("PUBLISH", print_cool_stuff, is_cool) and the generic one */
    if (mqtt_client_on(client, MQTT_PUBLISH, print_cool_stuff, is_cool, 0, NULL) < 0 ||
        mqtt_client_on(client, MQTT_PUBLISH, print_generic_stuff, NULL, 0, NULL) < 0 ||
        mqtt_client_on(client, MQTT_SUBACK, on_suback, NULL, 0, NULL) < 0 ||
        mqtt_client_on(client, MQTT_DISCONNECT, on_disconnect, NULL, 0, NULL) < 0) {
        fprintf(stderr, "mqtt_client_on failed\n");
        mqtt_client_free(client);
        return 1;
    }

    for (attempt = 1; attempt <= 10; attempt++) {
        rc = mqtt_client_connect(client, host, 60, (uint16_t)port);
        if (rc == MQTT_OK)
            break;
        printf("connecting... (attempt %d: %s)\n", attempt, mqtt_strerror(rc));
        sleep_ms(500);
    }
    if (rc != MQTT_OK) {
        fprintf(stderr, "could not connect to %s:%ld\n", host, port);
        mqtt_client_free(client);
        return 1;
    }
    printf("connected as %s\n", client_id);

    /* my_client.loop(on_message) */
    rc = mqtt_client_loop_start(client, on_message, NULL);
    if (rc != MQTT_OK) {
        fprintf(stderr, "mqtt_client_loop_start: %s\n", mqtt_strerror(rc));
        mqtt_client_free(client);
        return 1;
    }

    /* the seed subscribes to cool/channel only; we also listen to boring/channel so that
       the other callbacks have something to do */
    rc = mqtt_client_subscribe(client, topics, 2);
    if (rc < 0 || !wait_for(&n_suback, 1, 5000)) {
        fprintf(stderr, "subscribe failed: %s\n", rc < 0 ? mqtt_strerror(rc) : "no SUBACK");
        mqtt_client_free(client);
        return 1;
    }

    for (i = 0; i < n_messages; i++) {
        rc = mqtt_client_publish(client, messages[i].topic, messages[i].payload,
                                 strlen(messages[i].payload), messages[i].qos, false);
        printf("published \"%s\" on %s with qos %d (mid %d)\n", messages[i].payload,
               messages[i].topic, messages[i].qos, rc);
        if (rc < 0) {
            fprintf(stderr, "publish: %s\n", mqtt_strerror(rc));
            mqtt_client_free(client);
            return 1;
        }
    }

    /* 2 cool messages, 3 for on_message, 1 QoS 2 PUBLISH for the generic callback */
    ok = wait_for(&n_cool, 2, 5000) && wait_for(&n_on_message, 3, 5000) &&
         wait_for(&n_generic, 1, 5000);

    mqtt_client_disconnect(client);
    wait_for(&n_disconnect, 1, 5000);
    mqtt_client_free(client);

    printf("print_cool_stuff got %d, on_message got %d, print_generic_stuff got %d\n",
           get(&n_cool), get(&n_on_message), get(&n_generic));
    if (!ok || get(&n_cool) != 2 || get(&n_on_message) != 3 || get(&n_generic) != 1) {
        fprintf(stderr, "FAILED: expected 2, 3 and 1\n");
        return 1;
    }
    printf("OK\n");
    return 0;
}
