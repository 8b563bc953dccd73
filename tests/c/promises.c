/*
 * promises.c - promises of include/mqtt.h about threads and external event loops:
 *
 * - mqtt_client_socket: the descriptor "becomes readable whenever ... a call on any
 *   thread queued a packet": a publish from another thread wakes a poll() that is
 *   already blocked on it.
 * - mqtt_client_next_timeout_ms: "0 when work is already waiting": right after a
 *   publish from the loop's own thread, before any mqtt_client_loop call.
 * - mqtt_client_loop: MQTT_ERR_LOOP_RUNNING when "another thread is running the
 *   client", also with a negative timeout (which must not wait for that thread):
 *   while the other thread is blocked inside mqtt_client_loop, and while it runs a
 *   callback from inside mqtt_client_loop.
 *
 * No loop thread anywhere: every client is driven by mqtt_client_loop calls.
 *
 * usage: promises host port [case]
 */
#include "test_util.h"

#include <poll.h>
#include <sys/syscall.h>

/* ---- PUBACK bookkeeping (callbacks run on whichever thread calls mqtt_client_loop) -- */

struct acks {
    int count;
    int last_mid;
};

static void on_puback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct acks *acks = user_data;
    (void)client;
    pthread_mutex_lock(&t_lock);
    acks->count++;
    acks->last_mid = data->mid;
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
}

static int acked(struct acks *acks, int mid)
{
    int yes;
    pthread_mutex_lock(&t_lock);
    yes = acks->count > 0 && acks->last_mid == mid;
    pthread_mutex_unlock(&t_lock);
    return yes;
}

static void sleep_ms(int ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* One turn of an external loop: poll the client's descriptor no longer than the
 * client asks (and at most `cap_ms`), then mqtt_client_loop(client, 0). */
static int pump(mqtt_client *client, int cap_ms)
{
    struct pollfd pfd;
    int timeout = mqtt_client_next_timeout_ms(client);

    if (timeout < 0 || timeout > cap_ms)
        timeout = cap_ms;
    pfd.fd = mqtt_client_socket(client);
    pfd.events = POLLIN;
    pfd.revents = 0;
    if (poll(&pfd, 1, timeout) < 0)
        return -1;
    return mqtt_client_loop(client, 0);
}

/* Pump until the PUBACK of `mid` arrives (at most 5 s); returns 1 if it did. */
static int pump_until_acked(mqtt_client *client, struct acks *acks, int mid)
{
    double start = t_now();
    while (!acked(acks, mid) && t_now() - start < 5.0)
        pump(client, 100);
    return acked(acks, mid);
}

static int fd_readable_now(int fd)
{
    struct pollfd pfd;
    pfd.fd = fd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    return poll(&pfd, 1, 0) > 0;
}

/* Run the client until nothing is pending: its descriptor is not readable and no
 * work waits (next_timeout_ms != 0). Returns 1 once quiet, 0 after 5 s. */
static int quiesce(mqtt_client *client)
{
    double start = t_now();
    int fd = mqtt_client_socket(client);

    while (t_now() - start < 5.0) {
        if (!fd_readable_now(fd) && mqtt_client_next_timeout_ms(client) != 0)
            return 1;
        mqtt_client_loop(client, 0);
    }
    return 0;
}

/* ---- is the main thread asleep in poll()? ------------------------------------------ */

/* 1 when the main thread (tid == pid) is blocked in poll/ppoll, according to
 * /proc/self/task/<pid>/syscall; where that file is unreadable, when it is
 * sleeping (state S in .../stat). */
static int main_thread_in_poll(void)
{
    char path[64], buf[256];
    FILE *f;
    long nr;
    char *end;
    size_t n;

    snprintf(path, sizeof path, "/proc/self/task/%ld/syscall", (long)getpid());
    f = fopen(path, "r");
    if (f != NULL) {
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        if (n > 0) {
            nr = strtol(buf, &end, 10);
            if (end == buf) /* "running" */
                return 0;
#ifdef SYS_poll
            if (nr == SYS_poll)
                return 1;
#endif
#ifdef SYS_ppoll
            if (nr == SYS_ppoll)
                return 1;
#endif
            return 0;
        }
    }
    snprintf(path, sizeof path, "/proc/self/task/%ld/stat", (long)getpid());
    f = fopen(path, "r");
    if (f == NULL)
        return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    end = strrchr(buf, ')');
    return end != NULL && end[1] == ' ' && end[2] == 'S';
}

/* ---- 1. a publish on another thread wakes the poll() blocked on the descriptor ------ */

struct publisher {
    mqtt_client *client;
    char topic[128];
    int armed;        /* bumped by main just before it polls */
    int saw_blocked;  /* main was seen asleep in poll before publishing */
    int mid;
    double started;   /* just before mqtt_client_publish */
};

static void *publish_when_main_sleeps(void *arg)
{
    struct publisher *p = arg;
    double start;

    p->mid = MQTT_ERR_TIMEOUT;
    if (!t_wait(&p->armed, 1, 5000))
        return NULL;
    start = t_now();
    while (!main_thread_in_poll() && t_now() - start < 5.0)
        sleep_ms(1);
    p->saw_blocked = main_thread_in_poll();
    p->started = t_now();
    p->mid = mqtt_client_publish(p->client, p->topic, "wake", 4, 1, false);
    return NULL;
}

static void socket_wakes_up_when_another_thread_publishes(void)
{
    struct acks acks = {0, 0};
    struct publisher pub;
    mqtt_client *client = t_client("wake", true);
    pthread_t thread;
    int started = 0, fd = -1, n;
    struct pollfd pfd;
    double before = 0, after = 0;

    memset(&pub, 0, sizeof pub);
    CHECK(client != NULL);
    pub.client = client;
    t_topic(pub.topic, sizeof pub.topic, "wake");
    CHECK_RC(mqtt_client_on(client, MQTT_PUBACK, on_puback, NULL, 0, &acks), MQTT_OK);
    CHECK_RC(mqtt_client_set_reconnect(client, 0, 0), MQTT_OK);
    fd = mqtt_client_socket(client); /* first call: from now on every queued packet counts */
    CHECK(fd >= 0);
    CHECK_RC(mqtt_client_connect(client, t_host, 60, t_port), MQTT_OK);
    CHECK(quiesce(client));

    CHECK(pthread_create(&thread, NULL, publish_when_main_sleeps, &pub) == 0);
    started = 1;
    t_bump(&pub.armed);
    pfd.fd = fd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    before = t_now();
    n = poll(&pfd, 1, 10000); /* nothing else would end this before 10 s */
    after = t_now();
    pthread_join(thread, NULL);
    started = 0;

    if (!pub.saw_blocked)
        t_failf(__LINE__, "the publisher never saw the main thread asleep in poll()");
    CHECK(pub.saw_blocked);
    CHECK(pub.mid > 0);
    if (n != 1 || after - pub.started > 2.0)
        t_failf(__LINE__,
                "poll() on mqtt_client_socket returned %d after %.3f s (%.3f s after the "
                "other thread's publish): a publish on another thread did not wake it",
                n, after - before, after - pub.started);
    CHECK_EQ(n, 1);
    CHECK(pfd.revents & POLLIN);
    CHECK(after >= pub.started);          /* woken by the publish, not before it */
    CHECK(after - pub.started < 2.0);     /* and well before the 10 s timeout */
    CHECK(pump_until_acked(client, &acks, pub.mid));
done:
    if (started)
        pthread_join(thread, NULL);
    mqtt_client_free(client);
}

/* ---- 2. next_timeout_ms is 0 right after a publish from the loop's own thread ------- */

static void next_timeout_is_zero_after_a_publish_from_the_loop_thread(void)
{
    struct acks acks = {0, 0};
    mqtt_client *client = t_client("zero", true);
    char topic[128];
    int fd, idle, mid;

    CHECK(client != NULL);
    t_topic(topic, sizeof topic, "zero");
    CHECK_RC(mqtt_client_on(client, MQTT_PUBACK, on_puback, NULL, 0, &acks), MQTT_OK);
    CHECK_RC(mqtt_client_set_reconnect(client, 0, 0), MQTT_OK);
    fd = mqtt_client_socket(client);
    CHECK(fd >= 0);
    CHECK_RC(mqtt_client_connect(client, t_host, 60, t_port), MQTT_OK);
    CHECK(quiesce(client));
    idle = mqtt_client_next_timeout_ms(client);
    CHECK(idle > 0); /* the keepalive deadline: nothing waits */
    CHECK(!fd_readable_now(fd));

    CHECK_OK(mid, mqtt_client_publish(client, topic, "now", 3, 1, false));
    /* No mqtt_client_loop call in between. */
    CHECK_EQ(mqtt_client_next_timeout_ms(client), 0);
    CHECK(fd_readable_now(fd)); /* "a call on any thread queued a packet" */
    CHECK(pump_until_acked(client, &acks, mid));
    CHECK(mqtt_client_next_timeout_ms(client) != 0);
done:
    mqtt_client_free(client);
}

/* ---- 3. mqtt_client_loop(-1) while another thread is blocked in mqtt_client_loop ---- */

struct looper {
    mqtt_client *client;
    int timeout_ms;
    int rc;
    double returned;
};

static void *loop_once(void *arg)
{
    struct looper *l = arg;
    l->rc = mqtt_client_loop(l->client, l->timeout_ms);
    l->returned = t_now();
    return NULL;
}

/* Wait (at most 5 s) until another thread runs the client, as next_timeout_ms
 * reports it. */
static int wait_until_running_elsewhere(mqtt_client *client)
{
    double start = t_now();
    while (mqtt_client_next_timeout_ms(client) != MQTT_ERR_LOOP_RUNNING) {
        if (t_now() - start > 5.0)
            return 0;
        sleep_ms(1);
    }
    return 1;
}

static void loop_while_another_thread_waits_in_loop_returns_loop_running(void)
{
    mqtt_client *client = t_client("busy", true);
    struct looper other;
    pthread_t thread;
    char topic[128];
    int started = 0, rc;
    double t0, t1;

    memset(&other, 0, sizeof other);
    CHECK(client != NULL);
    t_topic(topic, sizeof topic, "busy");
    CHECK_RC(mqtt_client_set_reconnect(client, 0, 0), MQTT_OK);
    /* A 5 s keepalive bounds every wait should the promise break. */
    CHECK_RC(mqtt_client_connect(client, t_host, 5, t_port), MQTT_OK);
    CHECK(quiesce(client));

    other.client = client;
    other.timeout_ms = 10000;
    other.rc = 1;
    CHECK(pthread_create(&thread, NULL, loop_once, &other) == 0);
    started = 1;
    CHECK(wait_until_running_elsewhere(client));

    t0 = t_now();
    rc = mqtt_client_loop(client, -1);
    t1 = t_now();
    if (rc != MQTT_ERR_LOOP_RUNNING || t1 - t0 > 1.0)
        t_failf(__LINE__,
                "mqtt_client_loop(client, -1) while another thread is inside "
                "mqtt_client_loop returned %d (%s) after %.3f s",
                rc, mqtt_strerror(rc), t1 - t0);
    CHECK_RC(rc, MQTT_ERR_LOOP_RUNNING);
    CHECK(t1 - t0 < 1.0);
    /* The other thread was inside all along. */
    CHECK_RC(mqtt_client_next_timeout_ms(client), MQTT_ERR_LOOP_RUNNING);

    /* Wake it (a publish from this thread), and it returns normally. */
    CHECK(mqtt_client_publish(client, topic, "x", 1, 0, false) > 0);
    pthread_join(thread, NULL);
    started = 0;
    CHECK_RC(other.rc, MQTT_OK);
    CHECK(other.returned >= t1);
    CHECK(other.returned - t1 < 2.0);
    /* Nobody runs the client now. */
    CHECK_RC(mqtt_client_loop(client, 0), MQTT_OK);
done:
    if (started) {
        /* Make sure the other thread's turn ends before the client is freed. */
        mqtt_client_publish(client, topic, "x", 1, 0, false);
        pthread_join(thread, NULL);
    }
    mqtt_client_free(client);
}

/* ---- 4. ... and while that thread runs a callback from inside mqtt_client_loop ------ */

struct in_callback {
    int entered;  /* the PUBACK callback started (on the other thread) */
    int released; /* main is done: the callback may return */
    int stop;     /* the other thread stops calling mqtt_client_loop */
    int mid;      /* what the callback got */
};

static void hold_in_puback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct in_callback *s = user_data;
    struct timespec deadline;
    (void)client;

    t_deadline(&deadline, 5000);
    pthread_mutex_lock(&t_lock);
    s->mid = data->mid;
    s->entered++;
    t_signal_locked();
    while (!s->released)
        if (pthread_cond_timedwait(&t_changed, &t_lock, &deadline) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&t_lock);
}

struct driver {
    mqtt_client *client;
    struct in_callback *state;
};

static void *drive_until_stopped(void *arg)
{
    struct driver *d = arg;
    double start = t_now();
    while (!t_get(&d->state->stop) && t_now() - start < 10.0)
        mqtt_client_loop(d->client, 100);
    return NULL;
}

static void loop_while_another_thread_runs_a_callback_returns_loop_running(void)
{
    struct in_callback state = {0, 0, 0, 0};
    struct driver driver;
    mqtt_client *client = t_client("incb", true);
    pthread_t thread;
    char topic[128];
    int started = 0, rc = 1, mid;
    double t0 = 0, t1 = 0;

    CHECK(client != NULL);
    t_topic(topic, sizeof topic, "incb");
    CHECK_RC(mqtt_client_on(client, MQTT_PUBACK, hold_in_puback, NULL, 0, &state), MQTT_OK);
    CHECK_RC(mqtt_client_set_reconnect(client, 0, 0), MQTT_OK);
    CHECK_RC(mqtt_client_connect(client, t_host, 5, t_port), MQTT_OK);

    driver.client = client;
    driver.state = &state;
    CHECK(pthread_create(&thread, NULL, drive_until_stopped, &driver) == 0);
    started = 1;
    CHECK_OK(mid, mqtt_client_publish(client, topic, "ack me", 6, 1, false));
    CHECK(t_wait(&state.entered, 1, 5000));

    t0 = t_now();
    rc = mqtt_client_loop(client, -1);
    t1 = t_now();
    pthread_mutex_lock(&t_lock);
    state.released = 1;
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
    if (rc != MQTT_ERR_LOOP_RUNNING || t1 - t0 > 1.0)
        t_failf(__LINE__,
                "mqtt_client_loop(client, -1) while another thread runs a callback inside "
                "mqtt_client_loop returned %d (%s) after %.3f s",
                rc, mqtt_strerror(rc), t1 - t0);
    CHECK_RC(rc, MQTT_ERR_LOOP_RUNNING);
    CHECK(t1 - t0 < 1.0);
    CHECK_EQ(t_get(&state.mid), mid);
done:
    if (started) {
        pthread_mutex_lock(&t_lock);
        state.released = 1;
        state.stop = 1;
        t_signal_locked();
        pthread_mutex_unlock(&t_lock);
        pthread_join(thread, NULL);
    }
    mqtt_client_free(client);
}

int main(int argc, char **argv)
{
    const char *only = t_init(argc, argv);

    RUN(socket_wakes_up_when_another_thread_publishes);
    RUN(next_timeout_is_zero_after_a_publish_from_the_loop_thread);
    RUN(loop_while_another_thread_waits_in_loop_returns_loop_running);
    RUN(loop_while_another_thread_runs_a_callback_returns_loop_running);
    return t_finish("promises");
}
