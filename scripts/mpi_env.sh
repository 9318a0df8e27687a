# Environment for running Open MPI as root on one machine (loopback, no binding, oversubscription);
# sourced by the test and quick-start scripts.
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1        # == --oversubscribe
export OMPI_MCA_hwloc_base_binding_policy=none    # == --bind-to none (needed when oversubscribing / sharing cores)
export OMPI_MCA_btl=self,vader,tcp                # skip openib/ofi probing
export OMPI_MCA_pml=ob1                           # skip UCX (no RDMA hardware; pml ucx fails here anyway)
export OMPI_MCA_btl_tcp_if_include=lo             # loopback only
export OMPI_MCA_oob_tcp_if_include=lo
export OMPI_MCA_odls_base_sigkill_timeout=0       # kill surviving ranks ~50 ms after a rank dies (default 1 s)
# export OMPI_MCA_btl_vader_single_copy_mechanism=none  # only needed in Docker w/o CAP_SYS_PTRACE (CMA fails); works here
# export GLIBC_TUNABLES=glibc.malloc.hugetlb=1          # 10x faster large Allreduce on this VM (page faults are ~12 us/page); pass with mpirun -x GLIBC_TUNABLES
