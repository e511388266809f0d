"""Legacy virtio-blk: find the device by PCI scan, read, write, flush, read back."""
# gqemu mkdisk disk.img
# gqemu run --drive file=disk.img,format=raw,if=virtio scripts/examples/virtio_blk.py
from gqemu.guest.virtio_blk import VirtioBlk

SECTOR = 100
SCRATCH_VIRTIO = [0]        # without --drive: a scratch disk on if=virtio (00:02.0)


def guest(cpu):
    vb = VirtioBlk(cpu)                      # PCI scan, reset, features, queue 0, DRIVER_OK
    first = vb.read(1, 2)                    # IN: sectors 1-2
    vb.write(SECTOR, first)                  # OUT: copy them to 100-101
    vb.flush()                               # FLUSH
    back = vb.read(SECTOR, 2)
    assert back == first, "read-back differs from what was written"
    print("virtio-blk at 00:%02x.0, io 0x%04x, %d sectors, queue %d: copied sectors 1-2 to %d-%d"
          % (vb.devfn >> 3, vb.io, vb.capacity, vb.num, SECTOR, SECTOR + 1))
