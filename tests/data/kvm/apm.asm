; apm.asm -- SeaBIOS 1.16's APM BIOS (INT 15h AH=53) under QEMU 7.2, and
; the power-off it ends with: installation check, the real-mode, 16-bit
; and 32-bit interface connects (their segments and entry points), power
; status, no event, driver version, capabilities, an unknown function,
; then the ACPI PM1a control register SeaBIOS uses (0x604) read, and
; 5307 BX=1 CX=3 (power off: SeaBIOS writes SLP_EN | S5 there, QEMU shuts
; down, status 0).  Per call, to debugcon: AL (the function), EAX, EBX,
; ECX, EDX, ESI, EDI and CF.  tests/data/kvm/record.sh re-records it.
BITS 16
ORG 0x7C00
DBGC equ 0xE9
  cli
  cld
  xor ax, ax
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov sp, 0x7000
  mov bp, table
next:
  cmp bp, table_end
  jae done
  mov eax, [bp]
  mov ebx, [bp + 4]
  mov ecx, [bp + 8]
  xor edx, edx
  xor esi, esi
  xor edi, edi
  push bp
  stc
  int 0x15
  pop bp
  pushf
  push eax
  mov al, [bp]
  out DBGC, al
  pop eax
  call put4
  mov eax, ebx
  call put4
  mov eax, ecx
  call put4
  mov eax, edx
  call put4
  mov eax, esi
  call put4
  mov eax, edi
  call put4
  pop ax
  and al, 1
  out DBGC, al
  add bp, 12
  jmp next
done:
  mov dx, 0x604
  in ax, dx
  call put2
  ; power off
  mov ax, 0x5307
  mov bx, 1
  mov cx, 3
  int 0x15
  mov al, 0xEE          ; not reached
  out DBGC, al
  mov al, 0x10
  out 0xF4, al
  cli
  hlt
put4:
  call put2
  shr eax, 16
put2:
  out DBGC, al
  xchg al, ah
  out DBGC, al
  xchg al, ah
  ret
table:
  dd 0x5300, 0, 0
  dd 0x5301, 0, 0
  dd 0x5302, 0, 0
  dd 0x5303, 0, 0
  dd 0x5304, 0, 0
  dd 0x530A, 1, 0
  dd 0x530B, 0, 0
  dd 0x530E, 0, 0x0102
  dd 0x5310, 0, 0
  dd 0x5307, 1, 1         ; standby: a message only
  dd 0x5320, 0, 0         ; unknown
table_end:
  times 510-($-$$) db 0
  dw 0xAA55
