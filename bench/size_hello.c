/*
 * size_hello.c - the smallest useful libmqtt client, for bench/size.sh: create a
 * client, connect, subscribe, publish a message to itself, wait for it, disconnect,
 * free. bench/size.sh links it statically against libmqtt.a and reports how much
 * code the library adds (its text size minus that of the baseline build below).
 *
 *   size_hello HOST [PORT [CA_FILE]]      (PORT: 1883, or 8883 with -DSIZE_HELLO_TLS)
 *
 * Build variants (compile-time macros):
 *   -DSIZE_HELLO_TLS       also calls mqtt_client_set_tls (CA_FILE, or the system
 *                          trust store), as a TLS client would: needs a library
 *                          built with the `tls` feature.
 *   -DSIZE_HELLO_BASELINE  the same program with every mqtt_* function replaced by a
 *                          local stub: what the program costs without the library.
 *
 * Exit status 0 when the message came back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mqtt.h>

#ifdef SIZE_HELLO_BASELINE
/* Stubs with the library's signatures; noinline so the calls stay as calls. */
#define STUB static __attribute__((noinline))
static int stub_client;
STUB mqtt_client *stub_new(const char *id, bool clean)
{
    return (id != NULL && clean) ? (mqtt_client *)&stub_client : NULL;
}
STUB int stub_on(mqtt_client *c, int command, mqtt_callback f, mqtt_condition cond, int prio,
                 void *ud)
{
    (void)cond;
    (void)prio;
    (void)ud;
    return (c != NULL && f != NULL) ? command - command : MQTT_ERR_INVALID_ARGUMENT;
}
STUB int stub_connect(mqtt_client *c, const char *host, uint16_t keepalive, uint16_t port)
{
    return (c != NULL && host != NULL && keepalive + port > 0) ? MQTT_OK : MQTT_ERR_CONNECT_FAILED;
}
STUB int stub_subscribe(mqtt_client *c, const mqtt_subscription *topics, size_t count)
{
    return (c != NULL && topics != NULL && count > 0) ? 1 : MQTT_ERR_INVALID_ARGUMENT;
}
STUB int stub_publish(mqtt_client *c, const char *topic, const void *payload, size_t len, int qos,
                      bool retain)
{
    return (c != NULL && topic != NULL && payload != NULL && len + (size_t)qos > 0 && !retain)
               ? 2
               : MQTT_ERR_INVALID_ARGUMENT;
}
STUB int stub_loop(mqtt_client *c, int timeout_ms)
{
    return (c != NULL && timeout_ms >= 0) ? MQTT_OK : MQTT_ERR_INVALID_ARGUMENT;
}
STUB int stub_disconnect(mqtt_client *c)
{
    return c != NULL ? MQTT_OK : MQTT_ERR_INVALID_ARGUMENT;
}
STUB void stub_free(mqtt_client *c)
{
    (void)c;
}
STUB const char *stub_strerror(int code)
{
    return code == MQTT_OK ? "ok" : "error";
}
#ifdef SIZE_HELLO_TLS
STUB int stub_set_tls(mqtt_client *c, const mqtt_tls_options *options)
{
    return (c != NULL && options != NULL) ? MQTT_OK : MQTT_ERR_INVALID_ARGUMENT;
}
#define mqtt_client_set_tls stub_set_tls
#endif
#define mqtt_client_new stub_new
#define mqtt_client_on stub_on
#define mqtt_client_connect stub_connect
#define mqtt_client_subscribe stub_subscribe
#define mqtt_client_publish stub_publish
#define mqtt_client_loop stub_loop
#define mqtt_client_disconnect stub_disconnect
#define mqtt_client_free stub_free
#define mqtt_strerror stub_strerror
#endif /* SIZE_HELLO_BASELINE */

#define TOPIC "size_hello/echo"
#define MESSAGE "hello"

static int received;

static void on_message(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    if (data->message != NULL && data->message->payload_len == strlen(MESSAGE) &&
        memcmp(data->message->payload, MESSAGE, strlen(MESSAGE)) == 0)
        received = 1;
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "size_hello: %s: %s\n", what, mqtt_strerror(rc));
    return 1;
}

int main(int argc, char **argv)
{
    const char *host;
    int port, rc, turns, status = 0;
    mqtt_client *client;
    mqtt_subscription sub = {TOPIC, 1};

    if (argc < 2) {
        fprintf(stderr, "usage: %s HOST [PORT [CA_FILE]]\n", argv[0]);
        return 2;
    }
    host = argv[1];
#ifdef SIZE_HELLO_TLS
    port = argc > 2 ? atoi(argv[2]) : 8883;
#else
    port = argc > 2 ? atoi(argv[2]) : 1883;
#endif

    client = mqtt_client_new("size_hello", true);
    if (client == NULL)
        return fail("mqtt_client_new", MQTT_ERR_NO_MEMORY);
#ifdef SIZE_HELLO_TLS
    {
        mqtt_tls_options tls;
        memset(&tls, 0, sizeof tls);
        tls.ca_file = argc > 3 ? argv[3] : NULL; /* NULL: the system trust store */
        rc = mqtt_client_set_tls(client, &tls);
        if (rc != MQTT_OK) {
            mqtt_client_free(client);
            return fail("mqtt_client_set_tls", rc);
        }
    }
#endif
    mqtt_client_on(client, MQTT_PUBLISH, on_message, NULL, 0, NULL);
    rc = mqtt_client_connect(client, host, 30, (uint16_t)port);
    if (rc != MQTT_OK) {
        mqtt_client_free(client);
        return fail("mqtt_client_connect", rc);
    }
    rc = mqtt_client_subscribe(client, &sub, 1);
    if (rc < 0)
        status = fail("mqtt_client_subscribe", rc);
    rc = mqtt_client_publish(client, TOPIC, MESSAGE, strlen(MESSAGE), 1, false);
    if (rc < 0)
        status = fail("mqtt_client_publish", rc);
    /* wait up to 5 s for the message to come back (the baseline's stub never delivers) */
    for (turns = 0; status == 0 && !received && turns < 50; turns++) {
        rc = mqtt_client_loop(client, 100);
        if (rc != MQTT_OK)
            status = fail("mqtt_client_loop", rc);
    }
#ifndef SIZE_HELLO_BASELINE
    if (status == 0 && !received)
        status = fail("no message back within 5 s", MQTT_OK);
#endif
    mqtt_client_disconnect(client);
    mqtt_client_free(client);
#ifdef SIZE_HELLO_BASELINE
    printf("size_hello: baseline build, the library calls are stubs\n");
#else
    if (status == 0)
        printf("size_hello: \"%s\" came back\n", MESSAGE);
#endif
    return status;
}
