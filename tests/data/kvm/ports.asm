; ports.asm -- the legacy ports a boot loader reads besides the disks, as
; QEMU 7.2's pc (-nodefaults) answers them after SeaBIOS 1.16: the i8042
; (status 0x64, data 0x60; the A20 dance: D0 read output port, D1 write
; it, DD/DF, wait for the input buffer; the command byte, AD/AE, the
; self-tests, the keyboard's echo, ID and enable), System Control Port A (0x92: read,
; A20 off and on, read back, INT 15h 2402 after each), port 0x61 (the
; refresh and timer bits masked), 0x80, absent COM1/LPT1/VGA, the FDC, fw_cfg, and
; the CMOS bytes that do not follow the clock (0x0A..0x0D masked to their
; static bits, equipment, memory sizes, disk types and geometry, boot
; order).  Each value to debugcon as read; isa-debug-exit 0x10 at the end.
; tests/data/kvm/record.sh re-records it.
BITS 16
ORG 0x7C00
DBGC equ 0xE9
  cli
  cld
  xor ax, ax
  mov ds, ax
  mov ss, ax
  mov sp, 0x7000
  ; single reads
  mov si, plist
.p:
  lodsw
  test ax, ax
  jz .pd
  mov dx, ax
  in al, dx
  out DBGC, al
  jmp .p
.pd:
  in al, 0x61
  and al, 0x0F          ; refresh (4) and the PIT channel 2 output (5) follow time
  out DBGC, al
  ; the i8042: read the output port
  call kwait
  mov al, 0xD0
  out 0x64, al
  call kread
  mov bl, al
  out DBGC, al
  ; A20 off through it, read back, INT 15h's view
  call kwait
  mov al, 0xD1
  out 0x64, al
  call kwait
  mov al, bl
  and al, 0xFD
  out 0x60, al
  call kwait
  mov al, 0xD0
  out 0x64, al
  call kread
  out DBGC, al
  in al, 0x92
  out DBGC, al
  mov ax, 0x2402
  int 0x15
  out DBGC, al
  ; and on again
  call kwait
  mov al, 0xD1
  out 0x64, al
  call kwait
  mov al, bl
  or al, 0x02
  out 0x60, al
  call kwait
  mov al, 0xD0
  out 0x64, al
  call kread
  out DBGC, al
  in al, 0x92
  out DBGC, al
  ; port 0x92: off, read, INT 15h; on, read, INT 15h
  in al, 0x92
  and al, 0xFC
  out 0x92, al
  in al, 0x92
  out DBGC, al
  mov ax, 0x2402
  int 0x15
  out DBGC, al
  in al, 0x92
  or al, 0x02
  and al, 0xFE
  out 0x92, al
  in al, 0x92
  out DBGC, al
  mov ax, 0x2402
  int 0x15
  out DBGC, al
  ; INT 15h 2400 then the port
  mov ax, 0x2400
  int 0x15
  in al, 0x92
  out DBGC, al
  mov ax, 0x2401
  int 0x15
  in al, 0x92
  out DBGC, al
  in al, 0x64
  out DBGC, al
  ; the i8042's command byte, keyboard off and on, written back, the
  ; self-tests, the keyboard's echo and ID: (port, value, bytes to read)
  mov si, klist
.k:
  lodsb
  test al, al
  jz .kd
  mov dl, al
  xor dh, dh
  lodsb
  mov ah, al
  lodsb
  mov bl, al
  call kwait
  mov al, ah
  out dx, al
.kr:
  test bl, bl
  jz .k
  call kread
  out DBGC, al
  dec bl
  jmp .kr
.kd:
  in al, 0x64
  out DBGC, al
  ; CMOS bytes
  mov si, clist
.c:
  lodsb
  cmp al, 0xFF
  je .cd
  out 0x70, al
  in al, 0x71
  and al, [si]
  inc si
  out DBGC, al
  jmp .c
.cd:
  mov al, 0x10
  out 0xF4, al
  cli
  hlt
; wait for the i8042's input buffer to empty (bounded)
kwait:
  mov cx, 0xFFFF
.w:
  in al, 0x64
  test al, 2
  jz .ok
  loop .w
  mov al, 0xE1
  out DBGC, al
.ok:
  ret
; wait for output, read it (bounded)
kread:
  mov cx, 0xFFFF
.r:
  in al, 0x64
  test al, 1
  jnz .ok
  loop .r
  mov al, 0xE2
  out DBGC, al
.ok:
  in al, 0x60
  ret
plist:
  dw 0x64, 0x60, 0x64, 0x92, 0x80, 0x3F8, 0x3FD, 0x3FE, 0x2F8, 0x378, 0x379, 0x3DA, 0x3BA
  dw 0x3CC, 0x3F2, 0x3F4, 0x3F7, 0x4D0, 0x4D1, 0x21, 0xA1, 0x510, 0x511, 0x402, 0
klist:
  db 0x64, 0x20, 1      ; read the command byte
  db 0x64, 0xAD, 0      ; keyboard off
  db 0x64, 0x20, 1
  db 0x64, 0xAE, 0      ; on
  db 0x64, 0x20, 1
  db 0x64, 0x60, 0      ; write it: 0x45
  db 0x60, 0x45, 0
  db 0x64, 0x20, 1
  db 0x64, 0xAA, 1      ; controller self-test
  db 0x64, 0xAB, 1      ; keyboard interface test
  db 0x64, 0x20, 1
  db 0x60, 0xEE, 1      ; keyboard echo
  db 0x60, 0xF2, 3      ; keyboard ID
  db 0x60, 0xF4, 1      ; enable scanning: ACK
  db 0
clist:        ; index, mask
  db 0x0A, 0x7F, 0x0B, 0xFF, 0x0C, 0x00, 0x0D, 0xFF, 0x0E, 0xFF, 0x0F, 0xFF
  db 0x10, 0xFF, 0x11, 0xFF, 0x12, 0xFF, 0x13, 0xFF, 0x14, 0xFF, 0x15, 0xFF, 0x16, 0xFF
  db 0x17, 0xFF, 0x18, 0xFF, 0x19, 0xFF, 0x1A, 0xFF, 0x1B, 0xFF, 0x1C, 0xFF, 0x1D, 0xFF
  db 0x1E, 0xFF, 0x1F, 0xFF, 0x20, 0xFF, 0x21, 0xFF, 0x22, 0xFF, 0x23, 0xFF, 0x24, 0xFF
  db 0x2D, 0xFF, 0x30, 0xFF, 0x31, 0xFF, 0x32, 0xFF, 0x34, 0xFF, 0x35, 0xFF, 0x37, 0xFF
  db 0x38, 0xFF, 0x39, 0xFF, 0x3D, 0xFF, 0x5B, 0xFF, 0x5C, 0xFF, 0x5D, 0xFF, 0x5F, 0xFF
  db 0xFF
  times 510-($-$$) db 0
  dw 0xAA55
