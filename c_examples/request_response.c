/*
 * request_response.c - MQTT 5 request/response, matched by the seed's callbacks.
 *
 * Two clients in one program, both speaking MQTT 5:
 *   - the responder subscribes to "svc/add" and answers each request ("A B") with
 *     the sum, published to the request's Response Topic with its Correlation Data.
 *     It waits for all requests and answers them in reverse order, so replies come
 *     back in another order than the requests went out;
 *   - the requester sends REQUESTS requests, each with a Response Topic of its own
 *     and a Correlation Data "req-N". Before sending a request it registers a
 *     specific PUBLISH callback whose condition compares the reply's correlation
 *     data with that request's: each reply runs exactly the callback of its own
 *     request (the seed's condition system), and a reply matching no request
 *     would fall to the generic callback.
 *
 * The responder runs on its loop thread (mqtt_client_loop_start); the requester is
 * driven from main with mqtt_client_loop. Exits 0 when every request got its own,
 * correct answer.
 *
 * Usage: request_response [host] [port]      (defaults: localhost 1883)
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mqtt.h>

#define REQUESTS 5
#define REPLY_TOPIC "svc/replies/requester-1"

struct request {
    char correlation[16];
    long a, b;
    long answer; /* set by the reply callback */
    int replies; /* how many replies ran this request's callback */
};

/* What the responder keeps of a request until it answers. */
struct pending {
    char response_topic[128];
    unsigned char correlation[64];
    size_t correlation_len;
    long sum;
};

static struct pending pending[REQUESTS];
static int pending_count;
static int unmatched_replies;
static int failures;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "FAIL: %s\n", what);
        failures++;
    }
}

/* ---- the responder ------------------------------------------------------------------ */

static void answer_all(mqtt_client *responder)
{
    for (int i = pending_count - 1; i >= 0; i--) {
        const struct pending *p = &pending[i];
        char body[32];
        int len = snprintf(body, sizeof body, "%ld", p->sum);
        mqtt_properties *props = mqtt_properties_new();
        check(props != NULL, "mqtt_properties_new");
        if (!props)
            return;
        check(mqtt_properties_add_binary(props, MQTT_PROP_CORRELATION_DATA, p->correlation,
                                         p->correlation_len) == MQTT_OK,
              "add the correlation data to the reply");
        int mid = mqtt_client_publish_v5(responder, p->response_topic, body, (size_t)len, 1,
                                         false, props);
        check(mid > 0, "publish the reply");
        mqtt_properties_free(props);
        printf("responder: %s <- %s\n", p->response_topic, body);
    }
}

/* Runs on the responder's loop thread for every request. */
static void on_request(mqtt_client *responder, const mqtt_data *data, void *user_data)
{
    const mqtt_message *m = data->message;
    const char *topic;
    size_t topic_len;
    const uint8_t *correlation;
    size_t correlation_len;
    char text[64];
    long a = 0, b = 0;
    (void)user_data;

    if (pending_count == REQUESTS)
        return;
    if (mqtt_properties_get_string(m->properties, MQTT_PROP_RESPONSE_TOPIC, &topic, &topic_len) !=
            MQTT_OK ||
        mqtt_properties_get_binary(m->properties, MQTT_PROP_CORRELATION_DATA, &correlation,
                                   &correlation_len) != MQTT_OK) {
        check(0, "a request without a response topic or correlation data");
        return;
    }
    if (topic_len >= sizeof pending[0].response_topic ||
        correlation_len > sizeof pending[0].correlation || m->payload_len >= sizeof text) {
        check(0, "a request too large for this example");
        return;
    }
    /* The properties point into the received packet: copy what is kept. */
    struct pending *p = &pending[pending_count++];
    memcpy(p->response_topic, topic, topic_len);
    p->response_topic[topic_len] = '\0';
    memcpy(p->correlation, correlation, correlation_len);
    p->correlation_len = correlation_len;
    memcpy(text, m->payload, m->payload_len);
    text[m->payload_len] = '\0';
    check(sscanf(text, "%ld %ld", &a, &b) == 2, "a request reads \"A B\"");
    p->sum = a + b;
    printf("responder: request %.*s: %s\n", (int)correlation_len, (const char *)correlation, text);
    if (pending_count == REQUESTS)
        answer_all(responder);
}

/* ---- the requester ------------------------------------------------------------------ */

/* The condition of one request's reply callback: the reply carries its correlation data. */
static bool is_reply_to(const mqtt_data *data, void *user_data)
{
    const struct request *r = (const struct request *)user_data;
    const uint8_t *correlation;
    size_t len;
    if (!data->message || mqtt_properties_get_binary(data->message->properties,
                                                     MQTT_PROP_CORRELATION_DATA, &correlation,
                                                     &len) != MQTT_OK)
        return false;
    return len == strlen(r->correlation) && memcmp(correlation, r->correlation, len) == 0;
}

static void on_reply(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct request *r = (struct request *)user_data;
    char text[32];
    size_t n = data->message->payload_len < sizeof text - 1 ? data->message->payload_len
                                                            : sizeof text - 1;
    (void)client;
    memcpy(text, data->message->payload, n);
    text[n] = '\0';
    r->answer = strtol(text, NULL, 10);
    r->replies++;
    printf("requester: %s: %ld + %ld = %ld\n", r->correlation, r->a, r->b, r->answer);
}

static void on_unmatched(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    if (data->message) {
        unmatched_replies++;
        printf("requester: a reply for no request on %s\n", data->message->topic);
    }
}

/* SUBACK of one subscription: user_data is an int set to 1 when QoS 1 was granted. */
static void on_suback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    *(int *)user_data = data->reason_codes_len == 1 && data->reason_codes[0] == 1 ? 1 : -1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int replies_done(const struct request *requests)
{
    for (int i = 0; i < REQUESTS; i++)
        if (requests[i].replies == 0)
            return 0;
    return 1;
}

static mqtt_client *v5_client(const char *id, const char *host, long port)
{
    mqtt_client *c = mqtt_client_new(id, true);
    if (!c)
        return NULL;
    int rc = mqtt_client_set_protocol(c, MQTT_PROTOCOL_V5);
    if (rc == MQTT_OK)
        rc = mqtt_client_connect(c, host, 30, (uint16_t)port);
    if (rc != MQTT_OK) {
        fprintf(stderr, "%s: connect: %s\n", id, mqtt_strerror(rc));
        mqtt_client_free(c);
        return NULL;
    }
    return c;
}

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : "localhost";
    long port = argc > 2 ? strtol(argv[2], NULL, 10) : 1883;
    struct request requests[REQUESTS];

    mqtt_client *responder = v5_client("rr-responder", host, port);
    mqtt_client *requester = v5_client("rr-requester", host, port);
    if (!responder || !requester) {
        mqtt_client_free(responder);
        mqtt_client_free(requester);
        return 1;
    }

    /* Both subscriptions are in place (SUBACK seen, each client driven from here)
     * before any request goes out. The requester's has no_local: it never hears
     * its own messages. */
    int responder_subscribed = 0, requester_subscribed = 0;
    mqtt_subscription_v5 service = {"svc/add", 1, false, false, 0};
    mqtt_subscription_v5 replies = {REPLY_TOPIC, 1, true, false, 0};
    check(mqtt_client_on(responder, MQTT_SUBACK, on_suback, NULL, 0, &responder_subscribed) ==
              MQTT_OK,
          "responder: on SUBACK");
    check(mqtt_client_on(requester, MQTT_SUBACK, on_suback, NULL, 0, &requester_subscribed) ==
              MQTT_OK,
          "requester: on SUBACK");
    check(mqtt_client_subscribe_v5(responder, &service, 1, NULL) > 0, "responder subscribes");
    check(mqtt_client_subscribe_v5(requester, &replies, 1, NULL) > 0, "requester subscribes");
    double deadline = now_s() + 10;
    while ((!responder_subscribed || !requester_subscribed) && now_s() < deadline) {
        mqtt_client_loop(responder, 50);
        mqtt_client_loop(requester, 50);
    }
    check(responder_subscribed == 1 && requester_subscribed == 1, "both SUBACKs granted QoS 1");

    /* From now on the responder runs on its own loop thread. */
    check(mqtt_client_loop_start(responder, on_request, NULL) == MQTT_OK, "responder loop");
    check(mqtt_client_on(requester, MQTT_PUBLISH, on_unmatched, NULL, 0, NULL) == MQTT_OK,
          "generic PUBLISH callback");

    for (int i = 0; i < REQUESTS; i++) {
        struct request *r = &requests[i];
        snprintf(r->correlation, sizeof r->correlation, "req-%d", i);
        r->a = 10 * (i + 1);
        r->b = i;
        r->answer = 0;
        r->replies = 0;
        check(mqtt_client_on(requester, MQTT_PUBLISH, on_reply, is_reply_to, 10, r) == MQTT_OK,
              "register the reply callback of a request");

        char body[32];
        int len = snprintf(body, sizeof body, "%ld %ld", r->a, r->b);
        mqtt_properties *props = mqtt_properties_new();
        check(props != NULL, "mqtt_properties_new");
        if (!props)
            break;
        check(mqtt_properties_add_string(props, MQTT_PROP_RESPONSE_TOPIC, REPLY_TOPIC) == MQTT_OK,
              "add the response topic");
        check(mqtt_properties_add_binary(props, MQTT_PROP_CORRELATION_DATA, r->correlation,
                                         strlen(r->correlation)) == MQTT_OK,
              "add the correlation data");
        check(mqtt_client_publish_v5(requester, "svc/add", body, (size_t)len, 1, false, props) > 0,
              "publish a request");
        mqtt_properties_free(props);
    }

    deadline = now_s() + 10;
    while (!replies_done(requests) && now_s() < deadline)
        mqtt_client_loop(requester, 100);

    for (int i = 0; i < REQUESTS; i++) {
        const struct request *r = &requests[i];
        check(r->replies == 1, "each request ran its own reply callback exactly once");
        check(r->answer == r->a + r->b, "each reply answers its own request");
    }
    check(unmatched_replies == 0, "no reply fell to the generic callback");

    mqtt_client_disconnect(requester);
    mqtt_client_free(requester);
    mqtt_client_loop_stop(responder);
    mqtt_client_disconnect(responder);
    mqtt_client_free(responder);

    printf("request_response: %s\n", failures ? "FAILED" : "all replies matched their requests");
    return failures ? 1 : 0;
}
