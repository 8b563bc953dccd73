/*
 * callbacks.c - the callback rules of API.md ("on", the seed's callback system), checked
 * through the C ABI against a real broker. One case per rule:
 *
 *   specific_beats_generic     a true condition's callback runs instead of the generic one
 *   priority_highest_wins      among true conditions, the highest priority runs, only it
 *   tie_earliest_registered    equal priorities: the earliest registered runs
 *   generic_only_when_no_match the generic runs only when every condition was false
 *   generic_replaced           registering a second generic replaces the first
 *   on_message_every_qos_once  loop_start(on_message) gets QoS 0/1/2 exactly once each
 *                              (QoS 2 on PUBREL); the QoS 2 PUBLISH has no message
 *   acks_carry_mid             PUBACK/PUBREC/PUBCOMP/SUBACK/UNSUBACK carry the call's mid,
 *                              SUBACK carries one granted code per filter
 *   connack_session_present    CONNACK fires on every connection with session_present
 *   disconnect_ok              DISCONNECT fires with MQTT_OK after mqtt_client_disconnect
 *   disconnect_reason          DISCONNECT fires with an error when the broker drops us
 *
 * Usage: callbacks host port [case]
 */
#include "test_util.h"

/* ---- rules: a condition + a callback sharing one user_data --------------------------- */

enum match_mode { MATCH_TOPIC, MATCH_ANY_MESSAGE, MATCH_NEVER };

struct rule {
    enum match_mode mode;
    char topic[256];
    int cond_calls;
    struct t_log log; /* what the callback got */
};

static void rule_init(struct rule *r, enum match_mode mode, const char *topic)
{
    memset(r, 0, sizeof *r);
    r->mode = mode;
    if (topic != NULL)
        snprintf(r->topic, sizeof r->topic, "%s", topic);
}

static bool rule_cond(const mqtt_data *data, void *user_data)
{
    struct rule *r = (struct rule *)user_data;
    bool result = false;

    pthread_mutex_lock(&t_lock);
    r->cond_calls++;
    pthread_mutex_unlock(&t_lock);
    switch (r->mode) {
    case MATCH_TOPIC:
        result = data->message != NULL && strcmp(data->message->topic, r->topic) == 0;
        break;
    case MATCH_ANY_MESSAGE:
        result = data->message != NULL;
        break;
    case MATCH_NEVER:
        result = false;
        break;
    }
    return result;
}

static void rule_cb(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    t_log_add(&((struct rule *)user_data)->log, data);
}

static int rule_count(struct rule *r)
{
    return t_get(&r->log.count);
}

static int rule_cond_calls(struct rule *r)
{
    return t_get(&r->cond_calls);
}

/* Connect, start the loop thread and subscribe to `filter`; callbacks must be registered
 * before. Returns 0 or a negative code. */
static int start(mqtt_client *client, const char *filter, int qos, mqtt_callback on_message,
                 void *user_data)
{
    int rc;

    rc = mqtt_client_on(client, MQTT_SUBACK, t_on_suback, NULL, 0, NULL);
    if (rc < 0)
        return rc;
    rc = t_connect(client);
    if (rc < 0)
        return rc;
    rc = mqtt_client_loop_start(client, on_message, user_data);
    if (rc < 0)
        return rc;
    rc = t_subscribe_wait(client, filter, qos);
    return rc < 0 ? rc : 0;
}

static int publish_str(mqtt_client *client, const char *topic, const char *payload, int qos)
{
    return mqtt_client_publish(client, topic, payload, strlen(payload), qos, false);
}

/* ---- cases ------------------------------------------------------------------------- */

static void specific_beats_generic(void)
{
    static struct rule specific;
    static struct t_log generic;
    char base[128], filter[160], ta[160], tb[160];
    mqtt_client *c = t_client("specific", true);
    int rc;

    memset(&generic, 0, sizeof generic);
    t_topic(base, sizeof base, "x");
    snprintf(filter, sizeof filter, "%s/+", base);
    snprintf(ta, sizeof ta, "%s/a", base);
    snprintf(tb, sizeof tb, "%s/b", base);
    rule_init(&specific, MATCH_TOPIC, ta);

    CHECK(c != NULL);
    /* the generic first: registration order must not matter here */
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, t_record_cb, NULL, 0, &generic));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, rule_cb, rule_cond, 0, &specific));
    CHECK_RC(start(c, filter, 1, NULL, NULL), 0);

    CHECK_OK(rc, publish_str(c, ta, "a", 1));
    CHECK_OK(rc, publish_str(c, tb, "b", 1));
    CHECK_OK(rc, publish_str(c, ta, "a2", 1));
    CHECK_OK(rc, publish_str(c, tb, "end", 1));
    CHECK(t_wait(&generic.count, 2, 5000));
    CHECK_EQ(rule_count(&specific), 2);
    CHECK_EQ(t_log_count_payload(&specific.log, "a"), 1);
    CHECK_EQ(t_log_count_payload(&specific.log, "a2"), 1);
    CHECK_EQ(t_get(&generic.count), 2);
    CHECK_EQ(t_log_count_payload(&generic, "b"), 1);
    CHECK_EQ(t_log_count_payload(&generic, "end"), 1);
    CHECK_EQ(specific.log.rec[0].command, MQTT_PUBLISH);
done:
    mqtt_client_free(c);
}

static void priority_highest_wins(void)
{
    static struct rule p1, p5, p3, p10_false;
    static struct t_log generic;
    char filter[128];
    mqtt_client *c = t_client("priority", true);
    int rc;

    memset(&generic, 0, sizeof generic);
    t_topic(filter, sizeof filter, "t");
    rule_init(&p1, MATCH_ANY_MESSAGE, NULL);
    rule_init(&p5, MATCH_ANY_MESSAGE, NULL);
    rule_init(&p3, MATCH_ANY_MESSAGE, NULL);
    rule_init(&p10_false, MATCH_NEVER, NULL);

    CHECK(c != NULL);
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, rule_cb, rule_cond, 1, &p1));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, rule_cb, rule_cond, 5, &p5));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, rule_cb, rule_cond, 3, &p3));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, rule_cb, rule_cond, 10, &p10_false));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, t_record_cb, NULL, 0, &generic));
    CHECK_RC(start(c, filter, 1, NULL, NULL), 0);

    CHECK_OK(rc, publish_str(c, filter, "one", 1));
    CHECK_OK(rc, publish_str(c, filter, "two", 1));
    /* once p5 has both, both packets are fully dispatched */
    CHECK(t_wait(&p5.log.count, 2, 5000));
    CHECK_EQ(t_log_count_payload(&p5.log, "one"), 1);
    CHECK_EQ(t_log_count_payload(&p5.log, "two"), 1);
    CHECK_EQ(rule_count(&p1), 0);
    CHECK_EQ(rule_count(&p3), 0);
    CHECK_EQ(rule_count(&p10_false), 0);
    CHECK_EQ(t_get(&generic.count), 0);
    /* the higher-priority false condition was asked */
    CHECK(rule_cond_calls(&p10_false) >= 2);
done:
    mqtt_client_free(c);
}

static void tie_earliest_registered(void)
{
    static struct rule low, first, second, third;
    char filter[128];
    mqtt_client *c = t_client("tie", true);
    int rc;

    t_topic(filter, sizeof filter, "t");
    rule_init(&low, MATCH_ANY_MESSAGE, NULL);
    rule_init(&first, MATCH_ANY_MESSAGE, NULL);
    rule_init(&second, MATCH_ANY_MESSAGE, NULL);
    rule_init(&third, MATCH_ANY_MESSAGE, NULL);

    CHECK(c != NULL);
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, rule_cb, rule_cond, 1, &low));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, rule_cb, rule_cond, 2, &first));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, rule_cb, rule_cond, 2, &second));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, rule_cb, rule_cond, 2, &third));
    CHECK_RC(start(c, filter, 1, NULL, NULL), 0);

    CHECK_OK(rc, publish_str(c, filter, "one", 1));
    CHECK_OK(rc, publish_str(c, filter, "two", 0));
    CHECK_OK(rc, publish_str(c, filter, "three", 1));
    CHECK(t_wait(&first.log.count, 3, 5000));
    CHECK_EQ(rule_count(&second), 0);
    CHECK_EQ(rule_count(&third), 0);
    CHECK_EQ(rule_count(&low), 0);
done:
    mqtt_client_free(c);
}

static void generic_only_when_no_match(void)
{
    static struct rule never0, never5, only_a;
    static struct t_log generic;
    char base[128], filter[160], ta[160], tb[160];
    mqtt_client *c = t_client("nomatch", true);
    int rc;

    memset(&generic, 0, sizeof generic);
    t_topic(base, sizeof base, "x");
    snprintf(filter, sizeof filter, "%s/+", base);
    snprintf(ta, sizeof ta, "%s/a", base);
    snprintf(tb, sizeof tb, "%s/b", base);
    rule_init(&never0, MATCH_NEVER, NULL);
    rule_init(&never5, MATCH_NEVER, NULL);
    rule_init(&only_a, MATCH_TOPIC, ta);

    CHECK(c != NULL);
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, rule_cb, rule_cond, 0, &never0));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, rule_cb, rule_cond, 5, &never5));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, rule_cb, rule_cond, -3, &only_a));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, t_record_cb, NULL, 0, &generic));
    CHECK_RC(start(c, filter, 1, NULL, NULL), 0);

    CHECK_OK(rc, publish_str(c, tb, "b1", 1));
    CHECK_OK(rc, publish_str(c, ta, "a1", 1));
    CHECK_OK(rc, publish_str(c, tb, "b2", 1));
    CHECK(t_wait(&generic.count, 2, 5000));
    CHECK_EQ(t_log_count_payload(&generic, "b1"), 1);
    CHECK_EQ(t_log_count_payload(&generic, "b2"), 1);
    CHECK_EQ(t_get(&generic.count), 2);
    CHECK_EQ(rule_count(&only_a), 1);
    CHECK_EQ(t_log_count_payload(&only_a.log, "a1"), 1);
    CHECK_EQ(rule_count(&never0), 0);
    CHECK_EQ(rule_count(&never5), 0);
    /* the generic ran for b1 and b2 only after every condition said no */
    CHECK(rule_cond_calls(&never0) >= 2);
    CHECK(rule_cond_calls(&never5) >= 2);
    CHECK(rule_cond_calls(&only_a) >= 2);
done:
    mqtt_client_free(c);
}

static void generic_replaced(void)
{
    static struct t_log g1, g2;
    char filter[128];
    mqtt_client *c = t_client("replace", true);
    int rc;

    memset(&g1, 0, sizeof g1);
    memset(&g2, 0, sizeof g2);
    t_topic(filter, sizeof filter, "t");
    CHECK(c != NULL);
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, t_record_cb, NULL, 0, &g1));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, t_record_cb, NULL, 7, &g2));
    CHECK_RC(start(c, filter, 1, NULL, NULL), 0);

    CHECK_OK(rc, publish_str(c, filter, "one", 1));
    CHECK_OK(rc, publish_str(c, filter, "two", 1));
    CHECK(t_wait(&g2.count, 2, 5000));
    CHECK_EQ(t_get(&g1.count), 0);
    CHECK_EQ(t_log_count_payload(&g2, "one"), 1);
    CHECK_EQ(t_log_count_payload(&g2, "two"), 1);
done:
    mqtt_client_free(c);
}

static struct t_log om_log; /* what on_message got */

static int om_has_all(void *arg)
{
    const char *const *payloads = (const char *const *)arg;
    int i, j, found;
    for (i = 0; payloads[i] != NULL; i++) {
        found = 0;
        for (j = 0; j < om_log.count && j < T_MAX_RECORDS; j++)
            if (strcmp(om_log.rec[j].payload, payloads[i]) == 0)
                found = 1;
        if (!found)
            return 0;
    }
    return 1;
}

static const struct t_record *om_find(const char *payload)
{
    int j;
    for (j = 0; j < om_log.count && j < T_MAX_RECORDS; j++)
        if (strcmp(om_log.rec[j].payload, payload) == 0)
            return &om_log.rec[j];
    return NULL;
}

static void on_message_every_qos_once(void)
{
    static const char *const first[] = {"m0", "m1", "m2", NULL};
    static const char *const last[] = {"end", NULL};
    static struct t_log generic;
    char base[128], filter[160], t0[160], t1[160], t2[160];
    const struct t_record *r;
    mqtt_client *c = t_client("onmsg", true);
    int rc, mid1, mid2;

    memset(&om_log, 0, sizeof om_log);
    memset(&generic, 0, sizeof generic);
    t_topic(base, sizeof base, "x");
    snprintf(filter, sizeof filter, "%s/#", base);
    snprintf(t0, sizeof t0, "%s/0", base);
    snprintf(t1, sizeof t1, "%s/1", base);
    snprintf(t2, sizeof t2, "%s/2", base);

    CHECK(c != NULL);
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, t_record_cb, NULL, 0, &generic));
    CHECK_RC(start(c, filter, 2, t_record_cb, &om_log), 0);

    CHECK_OK(rc, publish_str(c, t0, "m0", 0));
    CHECK_OK(mid1, publish_str(c, t1, "m1", 1));
    CHECK_OK(mid2, publish_str(c, t2, "m2", 2));
    CHECK(mid1 > 0 && mid2 > 0 && mid1 != mid2);
    CHECK(t_wait_pred(om_has_all, (void *)first, 5000));
    CHECK_OK(rc, publish_str(c, t2, "end", 2));
    CHECK(t_wait_pred(om_has_all, (void *)last, 5000));

    pthread_mutex_lock(&t_lock);
    rc = om_log.count;
    pthread_mutex_unlock(&t_lock);
    CHECK_EQ(rc, 4);
    CHECK_EQ(t_log_count_payload(&om_log, "m0"), 1);
    CHECK_EQ(t_log_count_payload(&om_log, "m1"), 1);
    CHECK_EQ(t_log_count_payload(&om_log, "m2"), 1);

    r = om_find("m0");
    CHECK(r != NULL);
    CHECK_EQ(r->command, MQTT_PUBLISH);
    CHECK_EQ(r->qos, 0);
    CHECK(strcmp(r->topic, t0) == 0);

    r = om_find("m1");
    CHECK(r != NULL);
    CHECK_EQ(r->command, MQTT_PUBLISH);
    CHECK_EQ(r->qos, 1);
    CHECK(r->mid != 0); /* data->mid of an incoming QoS 1 PUBLISH */
    CHECK(strcmp(r->topic, t1) == 0);

    r = om_find("m2");
    CHECK(r != NULL);
    CHECK_EQ(r->command, MQTT_PUBREL); /* QoS 2: delivered when PUBREL arrives */
    CHECK_EQ(r->qos, 2);
    CHECK(r->mid != 0);
    CHECK(strcmp(r->topic, t2) == 0);

    /* the generic PUBLISH callback saw the two QoS 2 PUBLISH packets, without message */
    CHECK_EQ(t_get(&generic.count), 2);
    CHECK_EQ(generic.rec[0].has_message, 0);
    CHECK_EQ(generic.rec[1].has_message, 0);
    CHECK(generic.rec[0].mid != 0);
    CHECK_EQ(generic.rec[0].command, MQTT_PUBLISH);
done:
    mqtt_client_free(c);
}

/* SUBACK with its granted codes copied */
struct suback_seen {
    int count;
    int mid;
    size_t len;
    uint8_t codes[8];
};

static void suback_cb(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct suback_seen *s = (struct suback_seen *)user_data;
    size_t i;
    (void)client;
    pthread_mutex_lock(&t_lock);
    s->mid = data->mid;
    s->len = data->granted_qos_len;
    for (i = 0; i < data->granted_qos_len && i < sizeof s->codes; i++)
        s->codes[i] = data->granted_qos[i];
    s->count++;
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
}

static void acks_carry_mid(void)
{
    static struct t_log puback, pubrec, pubcomp, unsuback;
    static struct suback_seen suback;
    char base[128], f0[160], f1[160], f2[160], tp[160];
    const char *unsub[2];
    mqtt_subscription subs[3];
    mqtt_client *c = t_client("acks", true);
    int rc, mid_sub, mid_p1, mid_p2, mid_unsub;

    memset(&puback, 0, sizeof puback);
    memset(&pubrec, 0, sizeof pubrec);
    memset(&pubcomp, 0, sizeof pubcomp);
    memset(&unsuback, 0, sizeof unsuback);
    memset(&suback, 0, sizeof suback);
    t_topic(base, sizeof base, "x");
    snprintf(f0, sizeof f0, "%s/q0", base);
    snprintf(f1, sizeof f1, "%s/q1/+", base);
    snprintf(f2, sizeof f2, "%s/q2/#", base);
    snprintf(tp, sizeof tp, "%s/nobody", base);

    CHECK(c != NULL);
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBACK, t_record_cb, NULL, 0, &puback));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBREC, t_record_cb, NULL, 0, &pubrec));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBCOMP, t_record_cb, NULL, 0, &pubcomp));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_UNSUBACK, t_record_cb, NULL, 0, &unsuback));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_SUBACK, suback_cb, NULL, 0, &suback));
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, NULL, NULL), MQTT_OK);

    subs[0].topic = f0;
    subs[0].qos = 0;
    subs[1].topic = f1;
    subs[1].qos = 1;
    subs[2].topic = f2;
    subs[2].qos = 2;
    CHECK_OK(mid_sub, mqtt_client_subscribe(c, subs, 3));
    CHECK(mid_sub > 0 && mid_sub <= 65535);
    CHECK(t_wait(&suback.count, 1, 5000));
    CHECK_EQ(suback.mid, mid_sub);
    CHECK_EQ(suback.len, 3);
    CHECK_EQ(suback.codes[0], 0);
    CHECK_EQ(suback.codes[1], 1);
    CHECK_EQ(suback.codes[2], 2);

    CHECK_OK(mid_p1, publish_str(c, tp, "q1", 1));
    CHECK(mid_p1 > 0 && mid_p1 <= 65535);
    CHECK(t_wait(&puback.count, 1, 5000));
    CHECK_EQ(puback.rec[0].mid, mid_p1);
    CHECK_EQ(puback.rec[0].command, MQTT_PUBACK);
    CHECK_EQ(puback.rec[0].has_message, 0);

    CHECK_OK(mid_p2, publish_str(c, tp, "q2", 2));
    CHECK(mid_p2 > 0 && mid_p2 <= 65535);
    CHECK(mid_p2 != mid_p1);
    CHECK(t_wait(&pubcomp.count, 1, 5000));
    CHECK_EQ(pubcomp.rec[0].mid, mid_p2);
    CHECK_EQ(pubcomp.rec[0].command, MQTT_PUBCOMP);
    CHECK_EQ(t_get(&pubrec.count), 1);
    CHECK_EQ(pubrec.rec[0].mid, mid_p2);
    CHECK_EQ(pubrec.rec[0].command, MQTT_PUBREC);

    unsub[0] = f0;
    unsub[1] = f2;
    CHECK_OK(mid_unsub, mqtt_client_unsubscribe(c, unsub, 2));
    CHECK(mid_unsub > 0 && mid_unsub <= 65535);
    CHECK(t_wait(&unsuback.count, 1, 5000));
    CHECK_EQ(unsuback.rec[0].mid, mid_unsub);
    CHECK_EQ(unsuback.rec[0].command, MQTT_UNSUBACK);

    CHECK_EQ(t_get(&puback.count), 1);
    CHECK_EQ(t_get(&pubcomp.count), 1);
done:
    mqtt_client_free(c);
}

struct connack_seen {
    int count;
    int return_code[4];
    int session_present[4];
    int command[4];
};

static void connack_cb(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct connack_seen *s = (struct connack_seen *)user_data;
    (void)client;
    pthread_mutex_lock(&t_lock);
    if (s->count < 4) {
        s->return_code[s->count] = data->return_code;
        s->session_present[s->count] = data->session_present;
        s->command[s->count] = (int)data->command;
    }
    s->count++;
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
}

static void count_cb(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    t_bump((int *)user_data);
}

/* Drive the reactor in this thread until *flag >= target (or an error / the deadline). */
static int drive_until(mqtt_client *c, int *flag, int target, double seconds)
{
    double deadline = t_now() + seconds;
    while (t_get(flag) < target && t_now() < deadline)
        if (mqtt_client_loop(c, 50) < 0)
            break;
    return t_get(flag) >= target;
}

static void connack_session_present(void)
{
    static struct connack_seen persistent, clean;
    static int disconnects;
    mqtt_client *c = t_client("connack", false);
    mqtt_client *c2 = t_client("connack-clean", true);

    memset(&persistent, 0, sizeof persistent);
    memset(&clean, 0, sizeof clean);
    disconnects = 0;
    CHECK(c != NULL && c2 != NULL);
    CHECK(mqtt_client_on(c, MQTT_CONNACK, connack_cb, NULL, 0, &persistent) >= 0);
    CHECK(mqtt_client_on(c, MQTT_DISCONNECT, count_cb, NULL, 0, &disconnects) >= 0);
    CHECK(mqtt_client_on(c2, MQTT_CONNACK, connack_cb, NULL, 0, &clean) >= 0);

    /* first connection of a new persistent client: no session yet */
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK(t_wait(&persistent.count, 1, 5000));
    CHECK_EQ(persistent.command[0], MQTT_CONNACK);
    CHECK_EQ(persistent.return_code[0], 0);
    CHECK_EQ(persistent.session_present[0], 0);

    /* disconnect (driving the reactor here), then connect again: the broker kept it */
    CHECK_RC(mqtt_client_disconnect(c), MQTT_OK);
    CHECK(drive_until(c, &disconnects, 1, 5.0));
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK(t_wait(&persistent.count, 2, 5000));
    CHECK_EQ(persistent.return_code[1], 0);
    CHECK_EQ(persistent.session_present[1], 1);

    /* a clean session never has one */
    CHECK_RC(t_connect(c2), MQTT_OK);
    CHECK(t_wait(&clean.count, 1, 5000));
    CHECK_EQ(clean.return_code[0], 0);
    CHECK_EQ(clean.session_present[0], 0);
done:
    mqtt_client_free(c);
    mqtt_client_free(c2);
}

struct disconnect_seen {
    int count;
    int error;
    int command;
    int has_message;
};

static void disconnect_cb(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct disconnect_seen *s = (struct disconnect_seen *)user_data;
    (void)client;
    pthread_mutex_lock(&t_lock);
    s->error = data->error;
    s->command = (int)data->command;
    s->has_message = data->message != NULL;
    s->count++;
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
}

static void disconnect_ok(void)
{
    static struct disconnect_seen seen;
    mqtt_client *c = t_client("disconnect", true);

    memset(&seen, 0, sizeof seen);
    CHECK(c != NULL);
    CHECK(mqtt_client_on(c, MQTT_DISCONNECT, disconnect_cb, NULL, 0, &seen) >= 0);
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, NULL, NULL), MQTT_OK);
    CHECK_EQ(t_get(&seen.count), 0);
    CHECK_RC(mqtt_client_disconnect(c), MQTT_OK);
    CHECK(t_wait(&seen.count, 1, 5000));
    CHECK_EQ(seen.command, MQTT_DISCONNECT);
    CHECK_RC(seen.error, MQTT_OK);
    CHECK_EQ(seen.has_message, 0);
    CHECK_EQ(t_get(&seen.count), 1);
done:
    mqtt_client_free(c);
}

/* A second client with the same id makes the broker close the first connection. */
static void disconnect_reason(void)
{
    static struct disconnect_seen seen;
    char id[96];
    mqtt_client *c = NULL, *thief = NULL;

    memset(&seen, 0, sizeof seen);
    snprintf(id, sizeof id, "t-takeover-%ld", (long)getpid());
    c = mqtt_client_new(id, true);
    thief = mqtt_client_new(id, true);
    CHECK(c != NULL && thief != NULL);
    CHECK_RC(mqtt_client_set_reconnect(c, 0, 0), MQTT_OK); /* stay down */
    CHECK(mqtt_client_on(c, MQTT_DISCONNECT, disconnect_cb, NULL, 0, &seen) >= 0);
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, NULL, NULL), MQTT_OK);
    CHECK_RC(t_connect(thief), MQTT_OK);
    CHECK(t_wait(&seen.count, 1, 5000));
    CHECK_EQ(seen.command, MQTT_DISCONNECT);
    if (seen.error != MQTT_ERR_CONNECTION_LOST)
        printf("  note: takeover reported as %d (%s)\n", seen.error, mqtt_strerror(seen.error));
    CHECK(seen.error < 0);
done:
    mqtt_client_free(c);
    mqtt_client_free(thief);
}

int main(int argc, char **argv)
{
    const char *only = t_init(argc, argv);

    RUN(specific_beats_generic);
    RUN(priority_highest_wins);
    RUN(tie_earliest_registered);
    RUN(generic_only_when_no_match);
    RUN(generic_replaced);
    RUN(on_message_every_qos_once);
    RUN(acks_carry_mid);
    RUN(connack_session_present);
    RUN(disconnect_ok);
    RUN(disconnect_reason);
    return t_finish("callbacks");
}
