/*
 * concurrency.c - the threading promises of API.md / DESIGN.md through the C ABI:
 *
 *   threads_publish_while_delivering  4 threads publish QoS 1 while the loop thread delivers
 *                                     them back (same topic): every message arrives, every
 *                                     PUBACK arrives, every mid is distinct
 *   callback_uses_api                 a callback publishes, subscribes and disconnects
 *   free_while_loop_runs              mqtt_client_free with traffic in flight
 *   free_during_callback              mqtt_client_free from another thread while a callback
 *                                     runs: it returns after the callback, which never runs
 *                                     again
 *   forbidden_in_callback             connect, reconnect, loop, loop_stop from a callback of
 *                                     the same client return MQTT_ERR_IN_CALLBACK
 *   free_inside_callback              a callback frees its own client: no further callback
 *
 * Usage: concurrency host port [case]
 */
#include "test_util.h"

/* ---- 4 publisher threads ------------------------------------------------------------- */

#define N_THREADS 4
#define PER_THREAD 250

struct flood {
    mqtt_client *client;
    char topic[128];
    /* under t_lock */
    unsigned char received[N_THREADS][PER_THREAD];
    int distinct;
    int total;
    int bad_payloads;
    int pubacks;
    unsigned char mid_used[65536];
    int duplicate_mids;
    int publish_errors;
    int queue_full_retries;
};

struct publisher {
    struct flood *flood;
    int index;
};

static void flood_on_message(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct flood *f = (struct flood *)user_data;
    char buf[32];
    int t, i;
    size_t n;
    (void)client;

    if (data->message == NULL)
        return;
    n = data->message->payload_len < sizeof buf - 1 ? data->message->payload_len : sizeof buf - 1;
    memcpy(buf, data->message->payload, n);
    buf[n] = '\0';
    pthread_mutex_lock(&t_lock);
    f->total++;
    if (sscanf(buf, "%d:%d", &t, &i) == 2 && t >= 0 && t < N_THREADS && i >= 0 &&
        i < PER_THREAD) {
        if (!f->received[t][i]) {
            f->received[t][i] = 1;
            f->distinct++;
        }
    } else {
        f->bad_payloads++;
    }
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
}

static void flood_on_puback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct flood *f = (struct flood *)user_data;
    (void)client;
    (void)data;
    t_bump(&f->pubacks);
}

static void *publisher_main(void *arg)
{
    struct publisher *p = (struct publisher *)arg;
    struct flood *f = p->flood;
    struct timespec pause = {0, 1000000L};
    char payload[32];
    double deadline;
    int i, rc;

    for (i = 0; i < PER_THREAD; i++) {
        snprintf(payload, sizeof payload, "%d:%d", p->index, i);
        deadline = t_now() + 10.0;
        for (;;) {
            rc = mqtt_client_publish(f->client, f->topic, payload, strlen(payload), 1, false);
            if (rc != MQTT_ERR_QUEUE_FULL || t_now() > deadline)
                break;
            /* back-pressure: the bounded queue is full, let the reactor drain it */
            pthread_mutex_lock(&t_lock);
            f->queue_full_retries++;
            pthread_mutex_unlock(&t_lock);
            nanosleep(&pause, NULL);
        }
        pthread_mutex_lock(&t_lock);
        if (rc <= 0 || rc > 65535) {
            f->publish_errors++;
        } else {
            if (f->mid_used[rc])
                f->duplicate_mids++;
            f->mid_used[rc] = 1;
        }
        pthread_mutex_unlock(&t_lock);
        if (rc <= 0) {
            fprintf(stderr, "  publisher %d: publish #%d: %d (%s)\n", p->index, i, rc,
                    mqtt_strerror(rc));
            break;
        }
    }
    return NULL;
}

static int flood_all_received(void *arg)
{
    const struct flood *f = (const struct flood *)arg;
    return f->distinct == N_THREADS * PER_THREAD && f->pubacks >= N_THREADS * PER_THREAD;
}

static void threads_publish_while_delivering(void)
{
    static struct flood f;
    struct publisher pubs[N_THREADS];
    pthread_t threads[N_THREADS];
    int started = 0, i, rc;

    memset(&f, 0, sizeof f);
    t_topic(f.topic, sizeof f.topic, "flood");
    f.client = t_client("flood", true);
    CHECK(f.client != NULL);
    CHECK_OK(rc, mqtt_client_on(f.client, MQTT_SUBACK, t_on_suback, NULL, 0, NULL));
    CHECK_OK(rc, mqtt_client_on(f.client, MQTT_PUBACK, flood_on_puback, NULL, 0, &f));
    CHECK_RC(t_connect(f.client), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(f.client, flood_on_message, &f), MQTT_OK);
    CHECK_OK(rc, t_subscribe_wait(f.client, f.topic, 1));

    for (i = 0; i < N_THREADS; i++) {
        pubs[i].flood = &f;
        pubs[i].index = i;
        if (pthread_create(&threads[i], NULL, publisher_main, &pubs[i]) != 0)
            break;
        started++;
    }
    for (i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    CHECK_EQ(started, N_THREADS);
    CHECK_EQ(t_get(&f.publish_errors), 0);
    CHECK_EQ(t_get(&f.duplicate_mids), 0);

    if (!t_wait_pred(flood_all_received, &f, 30000))
        t_failf(__LINE__, "received %d distinct of %d, %d PUBACKs", t_get(&f.distinct),
                N_THREADS * PER_THREAD, t_get(&f.pubacks));
    CHECK(!t_case_failed);
    CHECK_EQ(t_get(&f.total), N_THREADS * PER_THREAD); /* no duplicate delivery */
    CHECK_EQ(t_get(&f.bad_payloads), 0);
    CHECK_EQ(t_get(&f.pubacks), N_THREADS * PER_THREAD);
    if (f.queue_full_retries > 0)
        printf("  note: %d publish retries after MQTT_ERR_QUEUE_FULL\n", f.queue_full_retries);
done:
    mqtt_client_free(f.client);
}

/* ---- API calls from inside callbacks ------------------------------------------------ */

struct reentrant {
    char go[160], echo[160], extra_filter[160], extra[160];
    /* under t_lock */
    int rc_echo, rc_subscribe, rc_extra, rc_disconnect;
    int extra_sub_mid;
    int got_echo, got_extra, disconnects, disconnect_error;
};

static void re_on_message(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct reentrant *r = (struct reentrant *)user_data;
    mqtt_subscription sub;
    const char *topic;
    int rc;

    if (data->message == NULL)
        return;
    topic = data->message->topic;
    if (strcmp(topic, r->go) == 0) {
        rc = mqtt_client_publish(client, r->echo, "echo", 4, 1, false);
        pthread_mutex_lock(&t_lock);
        r->rc_echo = rc;
        pthread_mutex_unlock(&t_lock);
        sub.topic = r->extra_filter;
        sub.qos = 2;
        rc = mqtt_client_subscribe(client, &sub, 1);
        pthread_mutex_lock(&t_lock);
        r->rc_subscribe = rc;
        r->extra_sub_mid = rc;
        t_signal_locked();
        pthread_mutex_unlock(&t_lock);
    } else if (strcmp(topic, r->echo) == 0) {
        t_bump(&r->got_echo);
    } else if (strcmp(topic, r->extra) == 0) {
        t_bump(&r->got_extra);
        rc = mqtt_client_disconnect(client);
        pthread_mutex_lock(&t_lock);
        r->rc_disconnect = rc;
        pthread_mutex_unlock(&t_lock);
    }
}

static void re_on_suback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct reentrant *r = (struct reentrant *)user_data;
    int is_extra, rc;

    pthread_mutex_lock(&t_lock);
    is_extra = r->extra_sub_mid > 0 && data->mid == r->extra_sub_mid;
    pthread_mutex_unlock(&t_lock);
    if (is_extra) {
        rc = mqtt_client_publish(client, r->extra, "extra", 5, 2, false);
        pthread_mutex_lock(&t_lock);
        r->rc_extra = rc;
        pthread_mutex_unlock(&t_lock);
    }
    t_on_suback(client, data, NULL);
}

static void re_on_disconnect(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct reentrant *r = (struct reentrant *)user_data;
    (void)client;
    pthread_mutex_lock(&t_lock);
    r->disconnect_error = data->error;
    r->disconnects++;
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
}

static void callback_uses_api(void)
{
    static struct reentrant r;
    char base[128], filter[160];
    mqtt_client *c = t_client("reentrant", true);
    int rc;

    memset(&r, 0, sizeof r);
    t_topic(base, sizeof base, "x");
    snprintf(filter, sizeof filter, "%s/+", base);
    snprintf(r.go, sizeof r.go, "%s/go", base);
    snprintf(r.echo, sizeof r.echo, "%s/echo", base);
    snprintf(r.extra_filter, sizeof r.extra_filter, "%s/more/#", base);
    snprintf(r.extra, sizeof r.extra, "%s/more/extra", base);

    CHECK(c != NULL);
    CHECK_OK(rc, mqtt_client_on(c, MQTT_SUBACK, re_on_suback, NULL, 0, &r));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_DISCONNECT, re_on_disconnect, NULL, 0, &r));
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, re_on_message, &r), MQTT_OK);
    CHECK_OK(rc, t_subscribe_wait(c, filter, 1));

    CHECK_OK(rc, mqtt_client_publish(c, r.go, "go", 2, 1, false));
    /* go -> (publish echo, subscribe more/#) -> SUBACK -> publish extra -> disconnect */
    CHECK(t_wait(&r.disconnects, 1, 10000));
    CHECK(r.rc_echo > 0);
    CHECK(r.rc_subscribe > 0);
    CHECK(r.rc_extra > 0);
    CHECK_RC(r.rc_disconnect, MQTT_OK);
    CHECK_RC(r.disconnect_error, MQTT_OK);
    CHECK_EQ(t_get(&r.got_extra), 1);
    /* the echo was published before the extra one, on the same connection */
    CHECK_EQ(t_get(&r.got_echo), 1);
done:
    mqtt_client_free(c);
}

/* ---- freeing a running client -------------------------------------------------------- */

static int free_received;

static void count_message(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    (void)user_data;
    t_bump(&free_received);
}

static void free_while_loop_runs(void)
{
    char topic[128];
    mqtt_client *c = t_client("free", true);
    double start;
    int i, rc;

    free_received = 0;
    t_topic(topic, sizeof topic, "t");
    CHECK(c != NULL);
    CHECK_OK(rc, mqtt_client_on(c, MQTT_SUBACK, t_on_suback, NULL, 0, NULL));
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, count_message, NULL), MQTT_OK);
    CHECK_OK(rc, t_subscribe_wait(c, topic, 1));
    for (i = 0; i < 200; i++)
        CHECK_OK(rc, mqtt_client_publish(c, topic, "in flight", 9, i % 3, false));
    CHECK(t_wait(&free_received, 1, 5000)); /* deliveries are under way */

    start = t_now();
    mqtt_client_free(c); /* connected, loop running, messages in flight */
    c = NULL;
    CHECK(t_now() - start < 5.0);
done:
    mqtt_client_free(c);
}

struct slow {
    int entered;  /* under t_lock */
    int running;  /* under t_lock */
    int finished; /* under t_lock */
};

static void slow_callback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct slow *s = (struct slow *)user_data;
    struct timespec work = {0, 300000000L}; /* the callback's own (slow) work */
    (void)client;
    (void)data;

    pthread_mutex_lock(&t_lock);
    s->entered++;
    s->running = 1;
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
    nanosleep(&work, NULL);
    pthread_mutex_lock(&t_lock);
    s->running = 0;
    s->finished++;
    pthread_mutex_unlock(&t_lock);
}

struct freer {
    mqtt_client *client;
    double took;
};

static void *freer_main(void *arg)
{
    struct freer *f = (struct freer *)arg;
    double start = t_now();
    mqtt_client_free(f->client);
    f->took = t_now() - start;
    return NULL;
}

static void free_during_callback(void)
{
    static struct slow s;
    struct freer fr;
    pthread_t thread;
    char topic[128];
    mqtt_client *c = t_client("freecb", true);
    int i, rc, entered_at_free, running_after, entered_after;

    memset(&s, 0, sizeof s);
    t_topic(topic, sizeof topic, "t");
    CHECK(c != NULL);
    CHECK_OK(rc, mqtt_client_on(c, MQTT_SUBACK, t_on_suback, NULL, 0, NULL));
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, slow_callback, &s), MQTT_OK);
    CHECK_OK(rc, t_subscribe_wait(c, topic, 1));
    for (i = 0; i < 5; i++)
        CHECK_OK(rc, mqtt_client_publish(c, topic, "slow", 4, 1, false));
    CHECK(t_wait(&s.entered, 1, 5000)); /* a callback is running now */

    pthread_mutex_lock(&t_lock);
    entered_at_free = s.entered;
    pthread_mutex_unlock(&t_lock);
    fr.client = c;
    fr.took = 0;
    c = NULL;
    CHECK(pthread_create(&thread, NULL, freer_main, &fr) == 0);
    pthread_join(thread, NULL);

    pthread_mutex_lock(&t_lock);
    running_after = s.running;
    entered_after = s.entered;
    pthread_mutex_unlock(&t_lock);
    CHECK_EQ(running_after, 0);          /* free waited for the callback to return */
    CHECK(entered_after <= entered_at_free + 1);
    CHECK(fr.took < 5.0);
    /* nothing runs after free returned */
    pthread_mutex_lock(&t_lock);
    entered_at_free = s.entered;
    pthread_mutex_unlock(&t_lock);
    CHECK_EQ(entered_at_free, entered_after);
done:
    mqtt_client_free(c);
}

/* ---- calls a callback may not make, and freeing from inside ------------------------ */

struct forbidden {
    int done; /* under t_lock */
    int rc_connect, rc_reconnect, rc_loop, rc_loop_stop, rc_loop_start, rc_publish;
};

static void forbidden_cb(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct forbidden *f = (struct forbidden *)user_data;
    int rc_connect, rc_reconnect, rc_loop, rc_loop_stop, rc_loop_start, rc_publish;

    if (data->message == NULL)
        return;
    rc_connect = mqtt_client_connect(client, t_host, 30, t_port);
    rc_reconnect = mqtt_client_reconnect(client);
    rc_loop = mqtt_client_loop(client, 0);
    rc_loop_stop = mqtt_client_loop_stop(client);
    rc_loop_start = mqtt_client_loop_start(client, NULL, NULL);
    rc_publish = mqtt_client_publish(client, data->message->topic, NULL, 0, 0, false);
    pthread_mutex_lock(&t_lock);
    if (f->done == 0) {
        f->rc_connect = rc_connect;
        f->rc_reconnect = rc_reconnect;
        f->rc_loop = rc_loop;
        f->rc_loop_stop = rc_loop_stop;
        f->rc_loop_start = rc_loop_start;
        f->rc_publish = rc_publish;
    }
    f->done++;
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
}

static void forbidden_in_callback(void)
{
    static struct forbidden f;
    char topic[128];
    mqtt_client *c = t_client("forbidden", true);
    int rc;

    memset(&f, 0, sizeof f);
    t_topic(topic, sizeof topic, "t");
    CHECK(c != NULL);
    CHECK_OK(rc, mqtt_client_on(c, MQTT_SUBACK, t_on_suback, NULL, 0, NULL));
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, forbidden_cb, &f), MQTT_OK);
    CHECK_OK(rc, t_subscribe_wait(c, topic, 1));
    CHECK_OK(rc, mqtt_client_publish(c, topic, "x", 1, 1, false));
    CHECK(t_wait(&f.done, 1, 5000));
    CHECK_RC(f.rc_connect, MQTT_ERR_IN_CALLBACK);
    CHECK_RC(f.rc_reconnect, MQTT_ERR_IN_CALLBACK);
    CHECK_RC(f.rc_loop, MQTT_ERR_IN_CALLBACK);
    CHECK_RC(f.rc_loop_stop, MQTT_ERR_IN_CALLBACK);
    CHECK(f.rc_loop_start == MQTT_ERR_IN_CALLBACK || f.rc_loop_start == MQTT_ERR_LOOP_RUNNING);
    CHECK(f.rc_publish > 0); /* allowed */
    /* the client still works */
    CHECK(t_wait(&f.done, 2, 5000)); /* the QoS 0 message published from the callback */
    CHECK(mqtt_client_is_connected(c));
done:
    mqtt_client_free(c);
}

struct self_free {
    int calls; /* under t_lock */
    int freed; /* under t_lock */
    int pubacks;
};

static void self_free_cb(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct self_free *s = (struct self_free *)user_data;
    int first;
    (void)data;

    pthread_mutex_lock(&t_lock);
    s->calls++;
    first = s->freed == 0;
    s->freed = 1;
    pthread_mutex_unlock(&t_lock);
    if (first)
        mqtt_client_free(client); /* the handle is released at once */
    pthread_mutex_lock(&t_lock);
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
}

static void self_free_puback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    t_bump(&((struct self_free *)user_data)->pubacks);
}

static int self_freed(void *arg)
{
    return ((struct self_free *)arg)->freed;
}

/* `c` frees itself from its message callback on the first message; `sender` keeps
 * publishing to it afterwards: no further callback of `c` may run. */
static void free_inside_callback(void)
{
    static struct self_free s;
    char topic[128];
    mqtt_client *c = t_client("selffree", true);
    mqtt_client *sender = t_client("selffree-sender", true);
    int i, rc;

    memset(&s, 0, sizeof s);
    t_topic(topic, sizeof topic, "t");
    CHECK(c != NULL && sender != NULL);
    CHECK_OK(rc, mqtt_client_on(c, MQTT_SUBACK, t_on_suback, NULL, 0, NULL));
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, self_free_cb, &s), MQTT_OK);
    CHECK_OK(rc, t_subscribe_wait(c, topic, 1));
    /* from now on the callback owns `c`: this thread must not touch it again */
    c = NULL;

    CHECK_OK(rc, mqtt_client_on(sender, MQTT_PUBACK, self_free_puback, NULL, 0, &s));
    CHECK_RC(t_connect(sender), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(sender, NULL, NULL), MQTT_OK);
    CHECK_OK(rc, mqtt_client_publish(sender, topic, "bye", 3, 1, false));
    CHECK(t_wait_pred(self_freed, &s, 5000));
    for (i = 0; i < 20; i++)
        CHECK_OK(rc, mqtt_client_publish(sender, topic, "more", 4, 1, false));
    CHECK(t_wait(&s.pubacks, 21, 5000)); /* the broker routed them all */
    CHECK_EQ(t_get(&s.calls), 1);
done:
    mqtt_client_free(c);
    mqtt_client_free(sender);
}

int main(int argc, char **argv)
{
    const char *only = t_init(argc, argv);

    RUN(threads_publish_while_delivering);
    RUN(callback_uses_api);
    RUN(free_while_loop_runs);
    RUN(free_during_callback);
    RUN(forbidden_in_callback);
    RUN(free_inside_callback);
    return t_finish("concurrency");
}
