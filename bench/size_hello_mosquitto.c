/*
 * size_hello_mosquitto.c - size_hello.c with libmosquitto, for bench/size.sh: how much
 * code libmosquitto adds to a statically linked client. bench/size.sh builds it only
 * when a static libmosquitto.a exists (Debian ships none). Same steps: create,
 * connect, subscribe, publish a message to itself, wait for it, disconnect, destroy.
 *
 *   size_hello_mosquitto HOST [PORT [CA_FILE]]
 *
 * -DSIZE_HELLO_TLS: mosquitto_tls_set with CA_FILE (libmosquitto's TLS is OpenSSL);
 * -DSIZE_HELLO_BASELINE: every mosquitto_* function replaced by a local stub.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>

#ifdef SIZE_HELLO_BASELINE
#define STUB static __attribute__((noinline))
static int stub_handle;
STUB int stub_lib_init(void)
{
    return MOSQ_ERR_SUCCESS;
}
STUB int stub_lib_cleanup(void)
{
    return MOSQ_ERR_SUCCESS;
}
STUB struct mosquitto *stub_new(const char *id, bool clean, void *ud)
{
    (void)ud;
    return (id != NULL && clean) ? (struct mosquitto *)&stub_handle : NULL;
}
STUB void stub_message_callback_set(struct mosquitto *m,
                                    void (*cb)(struct mosquitto *, void *,
                                               const struct mosquitto_message *))
{
    (void)m;
    (void)cb;
}
STUB int stub_tls_set(struct mosquitto *m, const char *cafile, const char *capath,
                      const char *certfile, const char *keyfile,
                      int (*pw)(char *, int, int, void *))
{
    (void)capath;
    (void)certfile;
    (void)keyfile;
    (void)pw;
    return (m != NULL && cafile != NULL) ? MOSQ_ERR_SUCCESS : MOSQ_ERR_INVAL;
}
STUB int stub_connect(struct mosquitto *m, const char *host, int port, int keepalive)
{
    return (m != NULL && host != NULL && port + keepalive > 0) ? MOSQ_ERR_SUCCESS : MOSQ_ERR_INVAL;
}
STUB int stub_subscribe(struct mosquitto *m, int *mid, const char *sub, int qos)
{
    (void)mid;
    return (m != NULL && sub != NULL && qos >= 0) ? MOSQ_ERR_SUCCESS : MOSQ_ERR_INVAL;
}
STUB int stub_publish(struct mosquitto *m, int *mid, const char *topic, int len,
                      const void *payload, int qos, bool retain)
{
    (void)mid;
    return (m != NULL && topic != NULL && payload != NULL && len + qos > 0 && !retain)
               ? MOSQ_ERR_SUCCESS
               : MOSQ_ERR_INVAL;
}
STUB int stub_loop(struct mosquitto *m, int timeout, int max_packets)
{
    return (m != NULL && timeout + max_packets > 0) ? MOSQ_ERR_SUCCESS : MOSQ_ERR_INVAL;
}
STUB int stub_disconnect(struct mosquitto *m)
{
    return m != NULL ? MOSQ_ERR_SUCCESS : MOSQ_ERR_INVAL;
}
STUB void stub_destroy(struct mosquitto *m)
{
    (void)m;
}
STUB const char *stub_strerror(int code)
{
    return code == MOSQ_ERR_SUCCESS ? "ok" : "error";
}
#define mosquitto_lib_init stub_lib_init
#define mosquitto_lib_cleanup stub_lib_cleanup
#define mosquitto_new stub_new
#define mosquitto_message_callback_set stub_message_callback_set
#define mosquitto_tls_set stub_tls_set
#define mosquitto_connect stub_connect
#define mosquitto_subscribe stub_subscribe
#define mosquitto_publish stub_publish
#define mosquitto_loop stub_loop
#define mosquitto_disconnect stub_disconnect
#define mosquitto_destroy stub_destroy
#define mosquitto_strerror stub_strerror
#endif /* SIZE_HELLO_BASELINE */

#define TOPIC "size_hello/echo"
#define MESSAGE "hello"

static int received;

static void on_message(struct mosquitto *mosq, void *user_data,
                       const struct mosquitto_message *message)
{
    (void)mosq;
    (void)user_data;
    if (message->payloadlen == (int)strlen(MESSAGE) &&
        memcmp(message->payload, MESSAGE, strlen(MESSAGE)) == 0)
        received = 1;
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "size_hello_mosquitto: %s: %s\n", what, mosquitto_strerror(rc));
    return 1;
}

int main(int argc, char **argv)
{
    struct mosquitto *mosq;
    int port, rc, turns, status = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s HOST [PORT [CA_FILE]]\n", argv[0]);
        return 2;
    }
#ifdef SIZE_HELLO_TLS
    port = argc > 2 ? atoi(argv[2]) : 8883;
#else
    port = argc > 2 ? atoi(argv[2]) : 1883;
#endif
    mosquitto_lib_init();
    mosq = mosquitto_new("size_hello_mosquitto", true, NULL);
    if (mosq == NULL)
        return fail("mosquitto_new", MOSQ_ERR_NOMEM);
#ifdef SIZE_HELLO_TLS
    rc = mosquitto_tls_set(mosq, argc > 3 ? argv[3] : "/etc/ssl/certs/ca-certificates.crt", NULL,
                           NULL, NULL, NULL);
    if (rc != MOSQ_ERR_SUCCESS) {
        mosquitto_destroy(mosq);
        return fail("mosquitto_tls_set", rc);
    }
#endif
    mosquitto_message_callback_set(mosq, on_message);
    rc = mosquitto_connect(mosq, argv[1], port, 30);
    if (rc != MOSQ_ERR_SUCCESS) {
        mosquitto_destroy(mosq);
        return fail("mosquitto_connect", rc);
    }
    rc = mosquitto_subscribe(mosq, NULL, TOPIC, 1);
    if (rc != MOSQ_ERR_SUCCESS)
        status = fail("mosquitto_subscribe", rc);
    rc = mosquitto_publish(mosq, NULL, TOPIC, (int)strlen(MESSAGE), MESSAGE, 1, false);
    if (rc != MOSQ_ERR_SUCCESS)
        status = fail("mosquitto_publish", rc);
    for (turns = 0; status == 0 && !received && turns < 50; turns++) {
        rc = mosquitto_loop(mosq, 100, 1);
        if (rc != MOSQ_ERR_SUCCESS)
            status = fail("mosquitto_loop", rc);
    }
#ifndef SIZE_HELLO_BASELINE
    if (status == 0 && !received)
        status = fail("no message back within 5 s", MOSQ_ERR_SUCCESS);
#endif
    mosquitto_disconnect(mosq);
    mosquitto_destroy(mosq);
    mosquitto_lib_cleanup();
#ifdef SIZE_HELLO_BASELINE
    printf("size_hello_mosquitto: baseline build, the library calls are stubs\n");
#else
    if (status == 0)
        printf("size_hello_mosquitto: \"%s\" came back\n", MESSAGE);
#endif
    return status;
}
