/* Directory aliases (fs/fuse_alias.h): an alternate node id resolves to its
 * directory for as long as the kernel holds a lookup of it, however many
 * other alternate ids are made meanwhile; the kernel's last forget ends it,
 * and a directory whose alternate id was forgotten gets a fresh one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fs/fuse_alias.h"

/* canonical node ids: generation << 32 | inode number */
static fuse_ino_t dir_id(uint32_t ino, uint32_t gen)
{
	return ((fuse_ino_t)gen << 32) | ino;
}

static void alt_resolves_until_forgotten(void **state)
{
	(void)state;
	size_t before = alias_alt_ids_held();
	fuse_ino_t dir = dir_id(1234, 77);
	fuse_ino_t alt = alias_alt_id(dir);
	assert_true(alt != dir);
	assert_int_equal(alt & 0xffffffffu, 1234);
	assert_true(alias_canonical(alt) == dir);
	assert_true(alias_canonical(dir) == dir);
	assert_int_equal(alias_alt_ids_held(), before + 1);
	alias_forget(alt, 1);
	assert_true(alias_canonical(alt) == alt);   /* a generation no file has */
	assert_int_equal(alias_alt_ids_held(), before);
	alias_forget(alt, 1);                       /* unknown ids: no-op */
	alias_forget(dir, 1);
	assert_int_equal(alias_alt_ids_held(), before);
}

/* The old fixed-size table lost a held id when a later one hashed to its
 * slot: the kernel's getattr of that directory then found no file. */
static void held_alt_survives_many_others(void **state)
{
	(void)state;
	fuse_ino_t first = dir_id(42, 9);
	fuse_ino_t alt = alias_alt_id(first);
	enum { OTHERS = 200000 };
	static fuse_ino_t others[OTHERS];
	for (uint32_t i = 0; i < OTHERS; i++) {
		others[i] = alias_alt_id(dir_id(1000 + i, i * 2654435761u));
		if (alias_canonical(alt) != first)
			fail_msg("held alternate id %#llx lost after %u others", (unsigned long long)alt, i + 1);
	}
	for (uint32_t i = 0; i < OTHERS; i++) {
		assert_true(alias_canonical(others[i]) == dir_id(1000 + i, i * 2654435761u));
		alias_forget(others[i], 1);
	}
	alias_forget(alt, 1);
	assert_true(alias_canonical(alt) == alt);
}

/* A directory another node moved is told under a new alternate id; told
 * again at its new place it keeps that id (one more lookup); once the
 * kernel forgot them all, the next telling makes another. */
static void moved_dir_alt_lifecycle(void **state)
{
	(void)state;
	struct alias_table *t = alias_start(NULL);   /* invalidations go nowhere */
	assert_non_null(t);
	fuse_ino_t dir = dir_id(500, 3), p = dir_id(20, 1), q = dir_id(21, 1);
	assert_true(alias_tell_dir(t, dir, p, "a", 0) == dir);
	assert_true(alias_tell_dir(t, dir, p, "a", 0) == dir);
	fuse_ino_t alt = alias_tell_dir(t, dir, q, "b", 0);   /* moved by another node */
	assert_true(alt != dir);
	assert_true(alias_canonical(alt) == dir);
	assert_true(alias_tell_dir(t, dir, q, "b", 0) == alt);
	alias_forget(alt, 1);
	assert_true(alias_canonical(alt) == dir);             /* one lookup left */
	alias_forget(alt, 1);
	assert_true(alias_canonical(alt) == alt);
	fuse_ino_t again = alias_tell_dir(t, dir, q, "b", 0);
	assert_true(again != alt && again != dir);
	assert_true(alias_canonical(again) == dir);
	/* this node's own rename moves the kernel's dentry: no new id */
	alias_renamed(t, q, "b", p, "c", 0);
	assert_true(alias_tell_dir(t, dir, p, "c", 0) == again);
	alias_forget(again, 2);
	alias_stop(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(alt_resolves_until_forgotten),
		cmocka_unit_test(held_alt_survives_many_others),
		cmocka_unit_test(moved_dir_alt_lifecycle),
	};
	return cmocka_run_group_tests_name("fuse_alias", tests, NULL, NULL);
}
