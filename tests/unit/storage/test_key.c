/* Volume keys: the master key file, wrapping bound to the volume id, secrets in memfds. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kh_test.h"
#include "storage/key.h"
#include "util/fs.h"

static char dir[] = "/tmp/kh-key-XXXXXX";

static void read_fd(int fd, char *buf, size_t size)
{
    ssize_t n = pread(fd, buf, size - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
}

static void test_master_and_wrap(void)
{
    kh_err err = KH_ERR_INIT;
    kh_key_master m, m2;
    CHECK(kh_key_master_load(&m, dir, &err) == 0);
    char path[256];
    snprintf(path, sizeof(path), "%s/master.key", dir);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600 && sb.st_size == 32);
    CHECK(kh_key_master_load(&m2, dir, &err) == 0); /* the same key again */
    CHECK(memcmp(m.key, m2.key, sizeof(m.key)) == 0);

    char wrapped[KH_KEY_WRAPPED_HEX], wrapped2[KH_KEY_WRAPPED_HEX];
    int fd = kh_key_new(&m, "vol-a", wrapped, &err);
    CHECK(fd >= 0 && strlen(wrapped) == KH_KEY_WRAPPED_HEX - 1);
    char pass[128], pass2[128];
    read_fd(fd, pass, sizeof(pass));
    CHECK(strlen(pass) == 64 && strspn(pass, "0123456789abcdef") == 64);
    CHECK(strstr(wrapped, pass) == NULL); /* stored only wrapped */
    /* sealed: the child cannot change it */
    CHECK(write(fd, "x", 1) < 0);
    close(fd);

    fd = kh_key_secret_fd(&m, "vol-a", wrapped, "a", &err);
    CHECK(fd >= 0);
    read_fd(fd, pass2, sizeof(pass2));
    CHECK_STR(pass, pass2);
    close(fd);
    /* a key moved to another volume, or another host's master: refused */
    kh_err e2 = KH_ERR_INIT;
    CHECK(kh_key_secret_fd(&m, "vol-b", wrapped, "b", &e2) < 0 && e2.code == KH_E_INTERNAL);
    kh_key_master other;
    memset(&other, 7, sizeof(other));
    CHECK(kh_key_secret_fd(&other, "vol-a", wrapped, "a", NULL) < 0);
    CHECK(kh_key_secret_fd(&m, "vol-a", "zz", "a", NULL) < 0);
    /* two keys differ */
    fd = kh_key_new(&m, "vol-a", wrapped2, &err);
    read_fd(fd, pass2, sizeof(pass2));
    close(fd);
    CHECK(strcmp(pass, pass2) != 0 && strcmp(wrapped, wrapped2) != 0);

    /* a master key others can read is refused */
    CHECK(chmod(path, 0644) == 0);
    kh_err e3 = KH_ERR_INIT;
    CHECK(kh_key_master_load(&m2, dir, &e3) < 0 && strstr(e3.msg, "0600"));
    kh_key_master_clear(&m);
    kh_key_master_clear(&m2);
}

/* Raw keys (backup stores): wrap, unwrap, bound to the associated data. */
static void test_raw_wrap(void)
{
    kh_err err = KH_ERR_INIT;
    kh_key_master m;
    char sub[256];
    snprintf(sub, sizeof(sub), "%s/raw", dir);
    mkdir(sub, 0700);
    CHECK(kh_key_master_load(&m, sub, &err) == 0);
    unsigned char key[32], back[32];
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (unsigned char)(255 - i);
    char w[KH_KEY_WRAPPED_HEX];
    CHECK(kh_key_wrap(&m, "store-1", key, w, &err) == 0 && strlen(w) == KH_KEY_WRAPPED_HEX - 1);
    CHECK(kh_key_unwrap(&m, "store-1", w, back, &err) == 0 && memcmp(key, back, 32) == 0);
    CHECK(kh_key_unwrap(&m, "store-2", w, back, &err) < 0 && err.code == KH_E_INTERNAL);
    CHECK(kh_key_unwrap(&m, "store-1", "zz", back, &err) < 0);
    kh_key_master_clear(&m);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    RUN(test_master_and_wrap);
    RUN(test_raw_wrap);
    kh_fs_rm_rf(dir, NULL);
    TEST_DONE();
}
