/* dlm-glue internal: the "dlm" lock backend — the kernel DLM through libdlm
 * (dlm_backend.c, compiled when the Makefile found libdlm: CSVFS_HAVE_LIBDLM).
 * What it maps and what it cannot report: docs/locking.md §10. */
#ifndef CSVFS_DLMGLUE_DLM_BACKEND_H
#define CSVFS_DLMGLUE_DLM_BACKEND_H

#include "dlm-glue/backend.h"

const struct dg_backend_ops *dg_dlm_backend_ops(void);

/* The message dg_connect gives when the kernel DLM or dlm_controld is absent
 * (shared with the tests so they check the exact text). */
#define DG_DLM_UNAVAILABLE_MSG \
	"kernel DLM not available: is dlm_controld running? (modprobe dlm; systemctl start dlm)"

#endif
