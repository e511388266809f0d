; int18.asm -- INT 18h, boot failure: SeaBIOS 1.16 tries the next boot
; device, and with none (QEMU passes no reboot timeout) waits forever.  The
; program sends 'A', calls INT 18h, then would send 'B' and exit: under
; QEMU it never comes back (record.sh with TIMEOUT=5: status 124).
; tests/data/kvm/record.sh re-records it.
BITS 16
ORG 0x7C00
  mov al, 'A'
  out 0xE9, al
  int 0x18
  mov al, 'B'
  out 0xE9, al
  mov al, 0x10
  out 0xF4, al
  cli
  hlt
  times 510-($-$$) db 0
  dw 0xAA55
