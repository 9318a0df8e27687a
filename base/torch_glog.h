// The one way to include LibTorch together with glog. LibTorch built without glog (official and
// Python-wheel builds) defines its own LOG/CHECK/VLOG macros, which clash with glog's; this header
// includes torch first, drops those macros, then includes glog so that glog's win everywhere.
#pragma once

#include <torch/torch.h>

#ifndef C10_USE_GLOG
#undef LOG
#undef LOG_IF
#undef VLOG
#undef VLOG_IS_ON
#undef CHECK
#undef CHECK_EQ
#undef CHECK_NE
#undef CHECK_LE
#undef CHECK_LT
#undef CHECK_GE
#undef CHECK_GT
#undef CHECK_NOTNULL
#undef DCHECK
#undef DCHECK_EQ
#undef DCHECK_NE
#undef DCHECK_LE
#undef DCHECK_LT
#undef DCHECK_GE
#undef DCHECK_GT
#undef LOG_EVERY_N
#undef LOG_FIRST_N
#endif

#include <glog/logging.h>
