/*
 * size_hello_paho.c - size_hello.c with Paho C's synchronous MQTTClient API
 * (libpaho-mqtt3c / libpaho-mqtt3cs), for bench/size.sh: how much code Paho adds to a
 * statically linked client. Same steps: create, connect, subscribe, publish a message
 * to itself, receive it, disconnect, destroy.
 *
 *   size_hello_paho HOST [PORT [CA_FILE]]
 *
 * -DSIZE_HELLO_TLS: ssl:// with a trust store (libpaho-mqtt3cs + OpenSSL);
 * -DSIZE_HELLO_BASELINE: every MQTTClient_* function replaced by a local stub.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <MQTTClient.h>

#ifdef SIZE_HELLO_BASELINE
#define STUB static __attribute__((noinline))
static int stub_handle;
static MQTTClient_message stub_message = MQTTClient_message_initializer;
STUB int stub_create(MQTTClient *h, const char *uri, const char *id, int persistence, void *ctx)
{
    (void)ctx;
    *h = (uri != NULL && id != NULL && persistence >= 0) ? &stub_handle : NULL;
    return *h != NULL ? MQTTCLIENT_SUCCESS : MQTTCLIENT_FAILURE;
}
STUB int stub_connect(MQTTClient h, MQTTClient_connectOptions *o)
{
    return (h != NULL && o != NULL) ? MQTTCLIENT_SUCCESS : MQTTCLIENT_FAILURE;
}
STUB int stub_subscribe(MQTTClient h, const char *topic, int qos)
{
    return (h != NULL && topic != NULL && qos >= 0) ? MQTTCLIENT_SUCCESS : MQTTCLIENT_FAILURE;
}
STUB int stub_publish(MQTTClient h, const char *topic, int len, const void *payload, int qos,
                      int retained, MQTTClient_deliveryToken *dt)
{
    *dt = len;
    return (h != NULL && topic != NULL && payload != NULL && qos + retained >= 0)
               ? MQTTCLIENT_SUCCESS
               : MQTTCLIENT_FAILURE;
}
STUB int stub_wait(MQTTClient h, MQTTClient_deliveryToken dt, unsigned long timeout)
{
    return (h != NULL && dt >= 0 && timeout > 0) ? MQTTCLIENT_SUCCESS : MQTTCLIENT_FAILURE;
}
STUB int stub_receive(MQTTClient h, char **topic, int *topic_len, MQTTClient_message **m,
                      unsigned long timeout)
{
    *topic = NULL;
    *topic_len = 0;
    *m = (h != NULL && timeout > 0) ? &stub_message : NULL;
    return MQTTCLIENT_SUCCESS;
}
STUB void stub_free_message(MQTTClient_message **m)
{
    *m = NULL;
}
STUB void stub_free(void *p)
{
    (void)p;
}
STUB int stub_disconnect(MQTTClient h, int timeout)
{
    return (h != NULL && timeout >= 0) ? MQTTCLIENT_SUCCESS : MQTTCLIENT_FAILURE;
}
STUB void stub_destroy(MQTTClient *h)
{
    *h = NULL;
}
STUB const char *stub_strerror(int code)
{
    return code == MQTTCLIENT_SUCCESS ? "ok" : "error";
}
#define MQTTClient_create stub_create
#define MQTTClient_connect stub_connect
#define MQTTClient_subscribe stub_subscribe
#define MQTTClient_publish stub_publish
#define MQTTClient_waitForCompletion stub_wait
#define MQTTClient_receive stub_receive
#define MQTTClient_freeMessage stub_free_message
#define MQTTClient_free stub_free
#define MQTTClient_disconnect stub_disconnect
#define MQTTClient_destroy stub_destroy
#define MQTTClient_strerror stub_strerror
#endif /* SIZE_HELLO_BASELINE */

#define TOPIC "size_hello/echo"
#define MESSAGE "hello"

static int fail(const char *what, int rc)
{
    fprintf(stderr, "size_hello_paho: %s: %s\n", what, MQTTClient_strerror(rc));
    return 1;
}

int main(int argc, char **argv)
{
    char uri[512];
    MQTTClient client;
    MQTTClient_connectOptions opts = MQTTClient_connectOptions_initializer;
    MQTTClient_deliveryToken token;
    MQTTClient_message *message = NULL;
    char *topic = NULL;
    int topic_len, rc, status = 0;
#ifdef SIZE_HELLO_TLS
    MQTTClient_SSLOptions ssl = MQTTClient_SSLOptions_initializer;
    const char *scheme = "ssl", *port = argc > 2 ? argv[2] : "8883";
#else
    const char *scheme = "tcp", *port = argc > 2 ? argv[2] : "1883";
#endif

    if (argc < 2) {
        fprintf(stderr, "usage: %s HOST [PORT [CA_FILE]]\n", argv[0]);
        return 2;
    }
    snprintf(uri, sizeof uri, "%s://%s:%s", scheme, argv[1], port);
    rc = MQTTClient_create(&client, uri, "size_hello_paho", MQTTCLIENT_PERSISTENCE_NONE, NULL);
    if (rc != MQTTCLIENT_SUCCESS)
        return fail("MQTTClient_create", rc);
#ifdef SIZE_HELLO_TLS
    ssl.trustStore = argc > 3 ? argv[3] : NULL;
    ssl.enableServerCertAuth = 1;
    opts.ssl = &ssl;
#endif
    opts.keepAliveInterval = 30;
    opts.cleansession = 1;
    rc = MQTTClient_connect(client, &opts);
    if (rc != MQTTCLIENT_SUCCESS) {
        MQTTClient_destroy(&client);
        return fail("MQTTClient_connect", rc);
    }
    rc = MQTTClient_subscribe(client, TOPIC, 1);
    if (rc != MQTTCLIENT_SUCCESS)
        status = fail("MQTTClient_subscribe", rc);
    rc = MQTTClient_publish(client, TOPIC, (int)strlen(MESSAGE), MESSAGE, 1, 0, &token);
    if (rc == MQTTCLIENT_SUCCESS)
        rc = MQTTClient_waitForCompletion(client, token, 5000);
    if (rc != MQTTCLIENT_SUCCESS)
        status = fail("MQTTClient_publish", rc);
    if (status == 0) {
        rc = MQTTClient_receive(client, &topic, &topic_len, &message, 5000);
        if (rc != MQTTCLIENT_SUCCESS || message == NULL)
            status = fail("no message back within 5 s", rc);
        if (message != NULL)
            MQTTClient_freeMessage(&message);
        if (topic != NULL)
            MQTTClient_free(topic);
    }
    MQTTClient_disconnect(client, 1000);
    MQTTClient_destroy(&client);
#ifdef SIZE_HELLO_BASELINE
    printf("size_hello_paho: baseline build, the library calls are stubs\n");
#else
    if (status == 0)
        printf("size_hello_paho: \"%s\" came back\n", MESSAGE);
#endif
    return status;
}
