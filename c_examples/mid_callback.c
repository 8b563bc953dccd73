/*
 * mid_callback.c - a callback for exactly one message.
 *
 * The seed: "publish returns the mid generated for the message to give the possibility
 * to set a callback precisely for that message." Here a specific PUBACK callback is
 * registered for the mid of a QoS 1 publish and a specific PUBCOMP callback for the mid of
 * a QoS 2 publish; their condition compares data->mid with the mid kept in user_data.
 * Acknowledgements of other messages fall through to the generic callbacks.
 *
 * The program drives the client from its own thread with mqtt_client_loop(), so no
 * acknowledgement can be processed between `publish` returning the mid and `on`
 * registering the callback for it. (With a loop thread the ack could arrive first: then
 * register the callback before publishing, from inside another callback, or keep a
 * generic callback that also looks at the mid.)
 *
 * Usage: mid_callback [host] [port]      (defaults: localhost 1883)
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mqtt.h>

struct expected_ack {
    const char *what;
    int mid;   /* what mqtt_client_publish returned */
    int fired; /* how many times the specific callback ran */
};

static int other_acks, disconnected;

static bool is_my_message(const mqtt_data *data, void *user_data)
{
    const struct expected_ack *ack = (const struct expected_ack *)user_data;
    return data->mid == ack->mid;
}

static void my_message_done(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct expected_ack *ack = (struct expected_ack *)user_data;
    (void)client;
    printf("specific %s callback: mid %u, the %s is done\n",
           data->command == MQTT_PUBACK ? "PUBACK" : "PUBCOMP", (unsigned)data->mid, ack->what);
    ack->fired++;
}

static void other_ack(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    printf("generic %s callback: mid %u (some other message)\n",
           data->command == MQTT_PUBACK ? "PUBACK" : "PUBCOMP", (unsigned)data->mid);
    other_acks++;
}

static void on_disconnect(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    (void)user_data;
    disconnected = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : "localhost";
    long port = argc > 2 ? strtol(argv[2], NULL, 10) : 1883;
    struct expected_ack qos1 = {"QoS 1 message", 0, 0};
    struct expected_ack qos2 = {"QoS 2 message", 0, 0};
    char client_id[64], topic[64];
    mqtt_client *client;
    int rc, other1, other2, status = 1;
    double deadline;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "usage: %s [host] [port]\n", argv[0]);
        return 2;
    }
    snprintf(client_id, sizeof client_id, "mid-callback-%ld", (long)getpid());
    snprintf(topic, sizeof topic, "example/mid_callback/%ld", (long)getpid());

    client = mqtt_client_new(client_id, true);
    if (client == NULL) {
        fprintf(stderr, "mqtt_client_new failed\n");
        return 1;
    }
    mqtt_client_set_connect_timeout(client, 5000);
    mqtt_client_on(client, MQTT_PUBACK, other_ack, NULL, 0, NULL);
    mqtt_client_on(client, MQTT_PUBCOMP, other_ack, NULL, 0, NULL);
    mqtt_client_on(client, MQTT_DISCONNECT, on_disconnect, NULL, 0, NULL);

    rc = mqtt_client_connect(client, host, 30, (uint16_t)port);
    if (rc != MQTT_OK) {
        fprintf(stderr, "connect to %s:%ld: %s\n", host, port, mqtt_strerror(rc));
        goto out;
    }
    printf("connected to %s:%ld\n", host, port);

    other1 = mqtt_client_publish(client, topic, "before", 6, 1, false);
    qos1.mid = mqtt_client_publish(client, topic, "watched qos 1", 13, 1, false);
    qos2.mid = mqtt_client_publish(client, topic, "watched qos 2", 13, 2, false);
    other2 = mqtt_client_publish(client, topic, "after", 5, 2, false);
    if (other1 < 0 || qos1.mid < 0 || qos2.mid < 0 || other2 < 0) {
        fprintf(stderr, "publish failed\n");
        goto out;
    }
    printf("published 4 messages: mids %d (qos 1), %d (qos 1, watched), %d (qos 2, watched), "
           "%d (qos 2)\n", other1, qos1.mid, qos2.mid, other2);

    /* a callback for exactly those two messages */
    if (mqtt_client_on(client, MQTT_PUBACK, my_message_done, is_my_message, 0, &qos1) < 0 ||
        mqtt_client_on(client, MQTT_PUBCOMP, my_message_done, is_my_message, 0, &qos2) < 0) {
        fprintf(stderr, "mqtt_client_on failed\n");
        goto out;
    }

    deadline = now_s() + 10.0;
    while ((qos1.fired == 0 || qos2.fired == 0 || other_acks < 2) && now_s() < deadline) {
        rc = mqtt_client_loop(client, 100);
        if (rc < 0) {
            fprintf(stderr, "mqtt_client_loop: %s\n", mqtt_strerror(rc));
            goto out;
        }
    }

    printf("specific PUBACK callback fired %d time(s), specific PUBCOMP callback %d time(s), "
           "generic callbacks %d time(s)\n", qos1.fired, qos2.fired, other_acks);
    if (qos1.fired == 1 && qos2.fired == 1 && other_acks == 2) {
        printf("OK\n");
        status = 0;
    } else {
        fprintf(stderr, "FAILED: expected 1, 1 and 2\n");
    }

    if (mqtt_client_disconnect(client) == MQTT_OK) {
        deadline = now_s() + 5.0;
        while (!disconnected && now_s() < deadline && mqtt_client_loop(client, 100) >= 0)
            ;
    }
out:
    mqtt_client_free(client);
    return status;
}
