; poweroff.asm -- writes 8 sectors at LBA 0x2000 with INT 13h (a new
; cluster of a qcow2 overlay), sends 'W' and AH, then powers off through
; ACPI (PM1a control 0x604 = SLP_EN | S5): QEMU 7.2 shuts down with status
; 0 and, unlike isa-debug-exit's exit(), closes and flushes the drives,
; so the overlay keeps the write (record_qcow2.sh poweroff).
BITS 16
ORG 0x7C00
  cli
  xor ax, ax
  mov ds, ax
  mov ss, ax
  mov sp, 0x7000
  mov si, dap
  mov ah, 0x43
  mov dl, 0x80
  int 0x13
  mov al, 'W'
  out 0xE9, al
  mov al, ah
  out 0xE9, al
  mov dx, 0x604
  mov ax, 0x2000
  out dx, ax
.h:                     ; (QEMU's vCPU runs on until the main loop stops it)
  hlt
  jmp .h
align 4
dap: db 16, 0
     dw 8, 0x7C00, 0
     dq 0x2000
  times 510-($-$$) db 0
  dw 0xAA55
