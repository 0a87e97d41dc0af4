/* The file lock table (fs/plock.h) against the rules of Linux's fs/locks.c:
 * conflicts between owners and nodes, split, merge, upgrade and downgrade
 * of one owner's ranges, POSIX and flock kept apart, release at a close
 * (owner) and at the last close (open file), a fenced node's locks, the
 * generation a waiter watches, and the grace period of a new coordinator.
 * A random sequence of operations is also checked against a byte map. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs/plock.h"

static struct plock lk(const char *node, uint64_t owner, int type, uint64_t start, uint64_t end)
{
	struct plock l = { .ino = 12, .kind = PLOCK_POSIX, .type = (uint8_t)type, .start = start,
			   .end = end, .owner = owner, .fh = owner * 10, .pid = (uint32_t)owner };
	snprintf(l.node, sizeof(l.node), "%s", node);
	return l;
}

static int set(struct plock_table *t, struct plock l)
{
	uint64_t gen;
	return plock_set(t, &l, &gen);
}

static size_t count(struct plock_table *t)
{
	struct plock *all;
	size_t n;
	assert_int_equal(plock_snapshot(t, NULL, &all, &n), 0);
	free(all);
	return n;
}

static void test_conflicts_between_owners_and_nodes(void **state)
{
	struct plock_table *t = plock_table_new();
	assert_int_equal(set(t, lk("a", 1, PLOCK_WRITE, 0, 9)), 0);
	assert_int_equal(set(t, lk("b", 1, PLOCK_WRITE, 9, 20)), -EAGAIN);   /* same owner number, other node */
	assert_int_equal(set(t, lk("a", 2, PLOCK_READ, 5, 5)), -EAGAIN);     /* other owner, same node */
	assert_int_equal(set(t, lk("b", 3, PLOCK_WRITE, 10, 20)), 0);        /* beside it */
	assert_int_equal(set(t, lk("a", 1, PLOCK_WRITE, 0, 9)), 0);          /* the holder again */
	struct plock c, q = lk("c", 4, PLOCK_READ, 8, 12);
	assert_int_equal(plock_test(t, &q, &c), 1);
	assert_true(c.end < 10 ? strcmp(c.node, "a") == 0 : strcmp(c.node, "b") == 0);
	/* readers share */
	assert_int_equal(set(t, lk("c", 5, PLOCK_READ, 30, 40)), 0);
	assert_int_equal(set(t, lk("a", 6, PLOCK_READ, 35, 50)), 0);
	assert_int_equal(set(t, lk("b", 7, PLOCK_WRITE, 40, 40)), -EAGAIN);
	/* another inode and flock locks do not see these */
	struct plock other = lk("b", 8, PLOCK_WRITE, 0, PLOCK_EOF);
	other.ino = 13;
	assert_int_equal(set(t, other), 0);
	struct plock fl = lk("b", 8, PLOCK_WRITE, 0, PLOCK_EOF);
	fl.kind = PLOCK_FLOCK;
	assert_int_equal(set(t, fl), 0);
	fl.owner = 9;
	assert_int_equal(set(t, fl), -EAGAIN);   /* flock against flock */
	plock_table_free(t);
}

static void test_split_merge_downgrade(void **state)
{
	struct plock_table *t = plock_table_new();
	assert_int_equal(set(t, lk("a", 1, PLOCK_WRITE, 0, 99)), 0);
	assert_int_equal(set(t, lk("a", 1, PLOCK_UNLOCK, 40, 59)), 0);   /* split */
	assert_int_equal(count(t), 2);
	assert_int_equal(set(t, lk("b", 2, PLOCK_WRITE, 40, 59)), 0);
	assert_int_equal(set(t, lk("b", 2, PLOCK_UNLOCK, 0, PLOCK_EOF)), 0);
	assert_int_equal(set(t, lk("a", 1, PLOCK_WRITE, 40, 59)), 0);     /* merge back */
	assert_int_equal(count(t), 1);
	assert_int_equal(set(t, lk("a", 1, PLOCK_READ, 10, 19)), 0);      /* downgrade a middle */
	assert_int_equal(count(t), 3);
	assert_int_equal(set(t, lk("b", 2, PLOCK_READ, 15, 15)), 0);
	assert_int_equal(set(t, lk("b", 2, PLOCK_READ, 20, 20)), -EAGAIN);
	assert_int_equal(set(t, lk("b", 2, PLOCK_UNLOCK, 0, PLOCK_EOF)), 0);
	assert_int_equal(set(t, lk("a", 1, PLOCK_READ, 0, 99)), 0);       /* downgrade all: one range */
	assert_int_equal(count(t), 1);
	struct plock c, q = lk("b", 2, PLOCK_WRITE, 0, 0);
	assert_int_equal(plock_test(t, &q, &c), 1);
	assert_int_equal(c.start, 0);
	assert_int_equal(c.end, 99);
	assert_int_equal(c.type, PLOCK_READ);
	assert_int_equal(set(t, lk("a", 1, PLOCK_WRITE, 100, PLOCK_EOF)), 0);   /* adjacent, other type */
	assert_int_equal(count(t), 2);
	assert_int_equal(set(t, lk("a", 1, PLOCK_READ, 100, PLOCK_EOF)), 0);    /* now it merges */
	assert_int_equal(count(t), 1);
	plock_table_free(t);
}

static void test_release_by_owner_fh_node(void **state)
{
	struct plock_table *t = plock_table_new();
	struct plock ofd = lk("a", 1, PLOCK_WRITE, 0, 9);
	struct plock posix = lk("a", 2, PLOCK_WRITE, 10, 19);
	posix.fh = ofd.fh;                              /* both taken through one open file */
	struct plock fl = lk("a", 3, PLOCK_READ, 0, PLOCK_EOF);
	fl.kind = PLOCK_FLOCK;
	assert_int_equal(set(t, ofd), 0);
	assert_int_equal(set(t, posix), 0);
	assert_int_equal(set(t, fl), 0);
	assert_int_equal(set(t, lk("b", 4, PLOCK_WRITE, 50, 60)), 0);
	assert_true(plock_holds(t, "a", 12, PLOCK_BY_OWNER, 2));
	assert_false(plock_holds(t, "b", 12, PLOCK_BY_OWNER, 2));
	assert_false(plock_holds(t, "a", 12, PLOCK_BY_OWNER, 3));   /* a close never drops flock */
	assert_int_equal(plock_release(t, "a", 12, PLOCK_BY_OWNER, 2), 1);
	assert_int_equal(plock_release(t, "b", 12, PLOCK_BY_FH, ofd.fh), 0);   /* another node's fh */
	assert_int_equal(plock_release(t, "a", 12, PLOCK_BY_FH, ofd.fh), 1);
	assert_int_equal(plock_release(t, "a", 12, PLOCK_BY_FH, fl.fh), 1);
	assert_int_equal(count(t), 1);
	uint64_t g0 = plock_gen(t);
	assert_int_equal(plock_drop_node(t, "b"), 1);
	assert_true(plock_gen(t) > g0);
	assert_int_equal(count(t), 0);
	plock_table_free(t);
}

static void test_wait_change_and_grace(void **state)
{
	struct plock_table *t = plock_table_new();
	uint64_t g = plock_gen(t);
	assert_int_equal(plock_wait_change(t, g, 20), g);       /* nothing changed: the timeout */
	assert_int_equal(set(t, lk("a", 1, PLOCK_WRITE, 0, 0)), 0);
	assert_true(plock_wait_change(t, g, 1000) > g);         /* changed before: at once */
	const char *expect[] = { "b", "c" };
	plock_begin_grace(t, expect, 2, 60000);
	assert_int_equal(count(t), 0);                           /* a new table */
	assert_true(plock_in_grace(t));
	plock_reclaim_done(t, "b");
	assert_true(plock_in_grace(t));
	plock_reclaim_done(t, "x");                              /* not expected: no effect */
	assert_true(plock_in_grace(t));
	g = plock_gen(t);
	plock_reclaim_done(t, "c");
	assert_false(plock_in_grace(t));
	assert_true(plock_gen(t) > g);                           /* waiters look again */
	plock_begin_grace(t, NULL, 0, 60000);
	assert_false(plock_in_grace(t));                         /* nobody to wait for */
	plock_begin_grace(t, expect, 1, 30);
	struct timespec ts = { 0, 60 * 1000000L };
	nanosleep(&ts, NULL);
	assert_false(plock_in_grace(t));                         /* ran out */
	plock_table_free(t);
}

/* Random operations of three owners on 64 bytes, against a map of who holds
 * each byte in which mode; plock_set must grant exactly when the map says
 * no other owner conflicts, and leave the map's state. */
#define BYTES 64
#define OWNERS 3

struct model { int mode[OWNERS][BYTES]; };   /* 0 none, PLOCK_READ, PLOCK_WRITE */

static int model_conflicts(const struct model *m, int owner, int type, int s, int e)
{
	for (int o = 0; o < OWNERS; o++)
		for (int b = s; o != owner && b <= e; b++)
			if (m->mode[o][b] && (m->mode[o][b] == PLOCK_WRITE || type == PLOCK_WRITE))
				return 1;
	return 0;
}

static void check_against_model(struct plock_table *t, const struct model *m)
{
	for (int o = 0; o < OWNERS; o++) {
		for (int b = 0; b < BYTES; b++) {
			/* what the other owners see at b */
			for (int other = 0; other < OWNERS; other++) {
				if (other == o)
					continue;
				struct plock q = lk("n", (uint64_t)other + 1, PLOCK_WRITE, (uint64_t)b, (uint64_t)b), c;
				int want = 0;
				for (int x = 0; x < OWNERS; x++)
					want |= x != other && m->mode[x][b];
				assert_int_equal(plock_test(t, &q, &c), want);
			}
		}
	}
}

static void test_random_against_model(void **state)
{
	struct plock_table *t = plock_table_new();
	struct model m = { 0 };
	unsigned seed = 12345;
	for (int i = 0; i < 3000; i++) {
		int owner = (int)(rand_r(&seed) % OWNERS), type = 1 + (int)(rand_r(&seed) % 3);
		int s = (int)(rand_r(&seed) % BYTES), len = 1 + (int)(rand_r(&seed) % 16);
		int e = s + len - 1 < BYTES ? s + len - 1 : BYTES - 1;
		int want = type != PLOCK_UNLOCK && model_conflicts(&m, owner, type, s, e) ? -EAGAIN : 0;
		assert_int_equal(set(t, lk("n", (uint64_t)owner + 1, type, (uint64_t)s, (uint64_t)e)), want);
		if (want == 0)
			for (int b = s; b <= e; b++)
				m.mode[owner][b] = type == PLOCK_UNLOCK ? 0 : type;
		if (i % 100 == 0)
			check_against_model(t, &m);
	}
	check_against_model(t, &m);
	/* ranges of one owner never overlap, adjacent ones of a type are merged */
	struct plock *all;
	size_t n;
	assert_int_equal(plock_snapshot(t, NULL, &all, &n), 0);
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < n; j++)
			if (i != j && all[i].owner == all[j].owner) {
				assert_false(all[i].start <= all[j].end && all[j].start <= all[i].end);
				assert_false(all[i].type == all[j].type && all[i].end + 1 == all[j].start);
			}
	free(all);
	plock_table_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conflicts_between_owners_and_nodes),
		cmocka_unit_test(test_split_merge_downgrade),
		cmocka_unit_test(test_release_by_owner_fh_node),
		cmocka_unit_test(test_wait_change_and_grace),
		cmocka_unit_test(test_random_against_model),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
