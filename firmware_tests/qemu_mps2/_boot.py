# Frozen into the cat-iot mps2-an385 firmware; runs after every reset, before main.py.
# Mounts the RAM disk (mps2.RAMDisk, 4 MiB outside the heap) as / with littlefs, formatting
# it on the first boot after power-on, as a board's _boot.py mounts its flash.
import sys
import vfs
import mps2

_bdev = mps2.RAMDisk()
try:
    vfs.mount(vfs.VfsLfs2(_bdev, mtime=False), "/")
except OSError:
    vfs.VfsLfs2.mkfs(_bdev)
    vfs.mount(vfs.VfsLfs2(_bdev, mtime=False), "/")
sys.path.append("/lib")
del sys, vfs, mps2, _bdev
